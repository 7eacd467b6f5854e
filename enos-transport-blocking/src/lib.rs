//! The place of the blocking driver of the EnOS device SDK (plain threads and `std::net`).
//! The driver itself is not here yet: this crate only re-exports the core,
//! [`enos_proto::Client`], which a thread with a socket and a timer can drive (bytes and
//! time in; bytes, events and a deadline out; see its docs), or use
//! `enos-transport-tokio`.
//!
//! The core, re-exported:
//!
//! ```
//! let keys = enos_transport_blocking::proto::DeviceKeys::new("pk", "dk").unwrap();
//! assert_eq!(keys.to_string(), "pk/dk");
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use enos_proto as proto;
