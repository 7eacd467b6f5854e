//! The core driven by a loop of one's own, as the "Your own event loop" section of
//! `enos-proto`'s docs shows it: one thread, a `std::net::TcpStream`, the read timeout as
//! the timer. It connects, posts once started, and answers a command from the cloud.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use enos_proto::ops::MeasurepointPost;
use enos_proto::{Client, CloseCause, Config, Credentials, DeviceKeys, Event, Now, Output, RequestOptions};
use enos_sim::registry::defaults::*;
use enos_sim::{Sim, SimThread};
use serde_json::json;

#[test]
fn a_loop_over_std_net_connects_posts_and_answers_a_command() {
    let sim = SimThread::start(Sim::builder()).unwrap();
    let addr = sim.tcp_addr().unwrap();
    let keys = DeviceKeys::new(DEVICE_PRODUCT, DEVICE).unwrap();
    let config = Config::new(keys.clone(), Credentials::DeviceSecret(DEVICE_SECRET.into()));
    let mut client = Client::new(config, Now::system()).unwrap();
    let mut socket: Option<TcpStream> = None;
    let mut buf = [0u8; 16 * 1024];
    let (mut posted, mut replied, mut answered) = (None, false, false);
    let mut command = None;
    let started = std::time::Instant::now();
    while !(replied && answered) {
        assert!(started.elapsed() < Duration::from_secs(15), "replied {replied}, answered {answered}");
        // 1. Do what the core asks, until it waits.
        let deadline = loop {
            match client.poll_output() {
                Output::Transmit(bytes) => match socket.as_mut().map(|s| s.write_all(&bytes)) {
                    Some(Ok(())) => {
                        client.handle_written(Now::system(), 1);
                    }
                    Some(Err(e)) => {
                        socket = None;
                        client.handle_closed(Now::system(), e.into());
                    }
                    None => {}
                },
                Output::OpenTransport => match TcpStream::connect(addr) {
                    Ok(s) => {
                        s.set_nodelay(true).unwrap();
                        socket = Some(s);
                        client.handle_connected(Now::system());
                    }
                    Err(e) => client.handle_closed(Now::system(), e.into()),
                },
                Output::CloseTransport => socket = None,
                Output::Event(Event::Started(Ok(()))) => {
                    let post = MeasurepointPost::new(json!({"temp": 21.5}));
                    posted = Some(client.request(Now::system(), post, RequestOptions::default()).unwrap());
                    // The cloud invokes a service meanwhile, from its own thread.
                    let k = keys.clone();
                    command =
                        Some(sim.run(move |s| async move { s.invoke_service(&k, "reset", json!({"now": 1})).await }));
                }
                Output::Event(Event::Started(Err(e))) => panic!("{e}"),
                Output::Event(Event::Response { id, result }) => {
                    assert_eq!(Some(id), posted);
                    assert!(result.is_ok(), "{result:?}");
                    replied = true;
                }
                Output::Event(Event::Command(cmd)) => {
                    let reply = cmd.reply_to.ok(&json!({"done": true})).unwrap();
                    client.reply(Now::system(), reply).unwrap();
                    answered = true;
                }
                Output::Event(_) => {}
                Output::Wait(at) => break at,
            }
        };
        if replied && answered {
            break;
        }
        // 2. Wait for bytes, or for the deadline: the read timeout is the timer (capped
        // here, so that the test's own deadline is checked).
        let now = Now::system();
        let wait = deadline.map_or(Duration::from_millis(100), |at| at.saturating_duration_since(now.instant));
        let wait = wait.min(Duration::from_millis(100));
        let Some(s) = socket.as_mut() else {
            std::thread::sleep(wait);
            client.handle_timeout(Now::system());
            continue;
        };
        if wait.is_zero() {
            client.handle_timeout(now);
            continue;
        }
        s.set_read_timeout(Some(wait)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => {
                socket = None;
                client.handle_closed(Now::system(), CloseCause::Eof);
            }
            Ok(n) => client.handle_input(Now::system(), &buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                client.handle_timeout(Now::system())
            }
            Err(e) => {
                socket = None;
                client.handle_closed(Now::system(), e.into());
            }
        }
    }
    // The command's reply was written in the turn that answered it; close writes the
    // DISCONNECT.
    client.close(Now::system());
    loop {
        match client.poll_output() {
            Output::Transmit(bytes) => {
                if let Some(s) = socket.as_mut() {
                    s.write_all(&bytes).unwrap();
                }
            }
            Output::Wait(_) => break,
            _ => {}
        }
    }
    drop(socket);
    let reply = sim.block_on(move |_| async move { command.expect("the command was sent").await }).unwrap();
    assert_eq!(reply.data, json!({"done": true}));
    assert_eq!(sim.device(&keys).unwrap().measurepoints["temp"].value, 21.5);
}
