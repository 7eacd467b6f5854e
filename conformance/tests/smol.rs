//! The conformance suite on smol.

enos_conformance::suite!(enos_transport_smol::Smol, smol::block_on);
