//! The floor under any sequential client on this machine: one thread writes 300 bytes
//! over loopback TCP and blocks until another thread echoes them back, in a loop, with
//! no MQTT, no JSON and no event loop. It prints the round trips per second and the CPU
//! the writing thread spends per round trip (user + system), across cores or, under
//! `taskset -c 0`, on one.
//!
//!     cargo run --release -p enos-benches --example loopback_floor
//!     taskset -c 0 target/release/examples/loopback_floor

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// User + system CPU ticks (1/100 s) of the calling thread.
fn thread_cpu_ticks() -> std::io::Result<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat")?;
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    Ok(tick(11) + tick(12))
}

fn main() -> std::io::Result<()> {
    let seconds: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = [0u8; 1024];
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            s.write_all(&buf[..n])?;
        }
    });
    let mut c = TcpStream::connect(addr)?;
    c.set_nodelay(true)?;
    let (msg, mut buf) = ([7u8; 300], [0u8; 1024]);
    let (cpu0, start) = (thread_cpu_ticks()?, Instant::now());
    let mut trips = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        c.write_all(&msg)?;
        let mut got = 0;
        while got < msg.len() {
            match c.read(&mut buf)? {
                0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                n => got += n,
            }
        }
        trips += 1;
    }
    let (secs, cpu) = (start.elapsed().as_secs_f64(), thread_cpu_ticks()? - cpu0);
    println!(
        "{trips} round trips in {secs:.1} s: {:.0} per second; the writing thread's CPU {:.2} µs per round trip",
        trips as f64 / secs,
        cpu as f64 * 10_000.0 / trips.max(1) as f64
    );
    Ok(())
}
