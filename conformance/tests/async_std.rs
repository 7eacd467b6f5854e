//! The conformance suite on async-std, with the smol driver unchanged.

enos_conformance::suite!(enos_transport_smol::Smol, async_std::task::block_on);
