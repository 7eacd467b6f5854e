//! The place of the smol (and async-std) driver of the EnOS device SDK. The driver itself
//! is not here yet: this crate only re-exports the core, [`enos_proto::Client`], which any
//! event loop can drive (bytes and time in; bytes, events and a deadline out; see its
//! docs), or use `enos-transport-tokio`.
//!
//! The core, re-exported:
//!
//! ```
//! let keys = enos_transport_smol::proto::DeviceKeys::new("pk", "dk").unwrap();
//! assert_eq!(keys.device_key(), "dk");
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use enos_proto as proto;
