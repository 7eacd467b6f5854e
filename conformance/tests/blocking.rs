//! The conformance suite on plain threads: every call of the blocking driver waits where it
//! is made; the scenario itself is entered with the driver's own `block_on`.

enos_conformance::suite!(enos_transport_blocking::Blocking, enos_transport_blocking::block_on);
