//! The smol (and async-std) driver of the EnOS device SDK: it moves bytes between a
//! socket and an [`enos_proto::Client`] and wakes on the core's deadline.
//!
//! The core it drives is re-exported, so a build against this crate sees the same types:
//!
//! ```
//! let keys = enos_transport_smol::proto::DeviceKeys::new("pk", "dk").unwrap();
//! assert_eq!(keys.device_key(), "dk");
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use enos_proto as proto;
