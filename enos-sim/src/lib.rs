//! `enos-sim`: a local EnOS cloud for tests, examples, load and offline development. It
//! reuses the device SDK's codec and signing from [`enos_proto`].
//!
//! ```
//! use enos_sim::proto::sign::{sign_device, SignMethod};
//! use enos_sim::proto::{DeviceKeys, Secret};
//!
//! // The simulator checks CONNECT passwords with the same signing as the SDK.
//! let keys = DeviceKeys::new("pk1234ab", "dev_001").unwrap();
//! let sign = sign_device(SignMethod::Sha256, "dev_001", &keys, "1600000000000", &Secret::new("DS0123456789abcdefgh"));
//! assert_eq!(sign, "37C4A32570961CB4FDBD6871959C3685B6620E500448FAE910FBBC4B6A759527");
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use enos_proto as proto;
