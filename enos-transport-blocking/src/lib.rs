//! The blocking driver of the EnOS device SDK: plain threads and `std::net`, no async
//! runtime, driving an [`enos_proto::Client`].
//!
//! The core it drives is re-exported, so a build against this crate sees the same types:
//!
//! ```
//! let keys = enos_transport_blocking::proto::DeviceKeys::new("pk", "dk").unwrap();
//! assert_eq!(keys.to_string(), "pk/dk");
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use enos_proto as proto;
