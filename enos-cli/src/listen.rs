//! `enos listen`: stay connected and answer commands, each printed as one JSON line with
//! its reply. Fixed answers (`--answer`), a program (`--exec`), or the SDK's default reply.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use enos_transport_blocking::proto::command::{CODE_HANDLER_FAILED, CODE_NO_HANDLER, MESSAGE_NO_HANDLER};
use enos_transport_blocking::proto::{Command, CommandKind};
use enos_transport_blocking::{ClientEvent, DeviceKeys, Responder};
use serde_json::{json, Value};

use crate::cli::ListenArgs;
use crate::error::CliError;
use crate::output::Out;
use crate::parse;
use crate::session::{Sending, Session};
use crate::settings::{parse_keys, Settings};

/// The most an `--exec` program's standard output may hold.
const MAX_EXEC_OUTPUT: u64 = 1024 * 1024;

/// The reply to give.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Code 200 with this data.
    Data(Value),
    /// An error code and message.
    Error(i32, String),
    /// Raw bytes (raw down only).
    Raw(Vec<u8>),
}

/// Which commands a fixed answer is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Kind {
    Service(Option<String>),
    Set,
    Get,
    Raw,
    Ota,
    Device,
    SubDevices,
    Traffic,
}

/// The fixed answers of `--answer`.
#[derive(Debug, Default)]
pub struct Answers(HashMap<Kind, Reply>);

impl Answers {
    /// Parses every `--answer`.
    ///
    /// # Errors
    ///
    /// [`CliError::Input`] naming the answer that does not parse, and why.
    pub fn parse(specs: &[String]) -> Result<Self, CliError> {
        let mut map = HashMap::new();
        for spec in specs {
            let bad = |why: String| CliError::input(format!("--answer {spec:?}"), why);
            let (kind, reply) = if let Some(rest) = spec.strip_prefix("service=") {
                let (id, reply) = rest.split_once(':').ok_or_else(|| bad("expected service=ID:REPLY".into()))?;
                if id.is_empty() {
                    return Err(bad("the service id is empty (service=* answers every service)".into()));
                }
                (Kind::Service((id != "*").then(|| id.to_owned())), reply)
            } else {
                let (name, reply) =
                    spec.split_once('=').ok_or_else(|| bad("expected KIND=REPLY or service=ID:REPLY".into()))?;
                let kind = match name {
                    "set" => Kind::Set,
                    "get" => Kind::Get,
                    "raw" => Kind::Raw,
                    "ota" => Kind::Ota,
                    "device" => Kind::Device,
                    "sub-devices" => Kind::SubDevices,
                    "traffic" => Kind::Traffic,
                    other => {
                        return Err(bad(format!(
                            "unknown kind {other:?}: service=ID, set, get, raw, ota, device, sub-devices or traffic"
                        )))
                    }
                };
                (kind, reply)
            };
            let reply = if kind == Kind::Raw {
                Reply::Raw(parse::hex(reply).map_err(bad)?)
            } else {
                parse_reply(reply).map_err(bad)?
            };
            map.insert(kind, reply);
        }
        Ok(Answers(map))
    }

    fn find(&self, cmd: &Command) -> Option<&Reply> {
        let kind = match &cmd.kind {
            CommandKind::InvokeService { service_id, .. } => {
                return self
                    .0
                    .get(&Kind::Service(Some(service_id.clone())))
                    .or_else(|| self.0.get(&Kind::Service(None)));
            }
            CommandKind::SetMeasurepoints { .. } => Kind::Set,
            CommandKind::GetMeasurepoints { .. } => Kind::Get,
            CommandKind::RawDown { .. } => Kind::Raw,
            CommandKind::OtaUpgrade { .. } => Kind::Ota,
            CommandKind::EnableDevice { .. } | CommandKind::DisableDevice { .. } | CommandKind::DeleteDevice { .. } => {
                Kind::Device
            }
            CommandKind::EnableSubDevices { .. }
            | CommandKind::DisableSubDevices { .. }
            | CommandKind::DeleteSubDevices { .. } => Kind::SubDevices,
            CommandKind::TrafficControl { .. } => Kind::Traffic,
            _ => return None,
        };
        self.0.get(&kind)
    }
}

/// `error=CODE[:MESSAGE]`, or JSON data.
fn parse_reply(text: &str) -> Result<Reply, String> {
    if let Some(rest) = text.strip_prefix("error=") {
        let (code, message) = rest.split_once(':').unwrap_or((rest, ""));
        let code = code.trim().parse::<i32>().map_err(|_| format!("error={code}: the code is not a number"))?;
        return Ok(Reply::Error(code, message.to_owned()));
    }
    serde_json::from_str(text)
        .map(Reply::Data)
        .map_err(|e| format!("the reply is not JSON ({e}); write error=CODE:MESSAGE for an error"))
}

/// A command as JSON: what `--exec` reads and what is printed.
pub fn describe(cmd: &Command) -> Value {
    let mut v = json!({"device": cmd.device.to_string(), "id": cmd.id});
    let keys = |d: &[DeviceKeys]| json!(d.iter().map(ToString::to_string).collect::<Vec<_>>());
    let (kind, extra) = match &cmd.kind {
        CommandKind::InvokeService { service_id, params } => {
            ("service", json!({"service": service_id, "params": params}))
        }
        CommandKind::SetMeasurepoints { points } => ("set", json!({"points": points})),
        CommandKind::GetMeasurepoints { point_ids } => ("get", json!({"points": point_ids})),
        CommandKind::EnableSubDevices { devices } => ("sub-devices.enable", json!({"devices": keys(devices)})),
        CommandKind::DisableSubDevices { devices } => ("sub-devices.disable", json!({"devices": keys(devices)})),
        CommandKind::DeleteSubDevices { devices } => ("sub-devices.delete", json!({"devices": keys(devices)})),
        CommandKind::OtaUpgrade { firmware } => ("ota", json!({"firmware": firmware})),
        CommandKind::EnableDevice { params } => ("device.enable", json!({"params": params})),
        CommandKind::DisableDevice { params } => ("device.disable", json!({"params": params})),
        CommandKind::DeleteDevice { params } => ("device.delete", json!({"params": params})),
        CommandKind::TrafficControl { method, params } => ("traffic", json!({"method": method, "params": params})),
        CommandKind::RawDown { payload } => ("raw", json!({"hex": parse::to_hex(payload)})),
        _ => ("unknown", json!({})),
    };
    v["kind"] = json!(kind);
    if let (Some(o), Value::Object(extra)) = (v.as_object_mut(), extra) {
        o.extend(extra);
    }
    v
}

/// What answers commands: the fixed answers, the program, the count.
struct Listener {
    answers: Answers,
    exec: Option<PathBuf>,
    exec_timeout: Duration,
    count: Option<u64>,
    seen: AtomicU64,
    stop: mpsc::Sender<Stop>,
}

/// Why `listen` ends.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stop {
    Count,
    Signal,
    /// Standard output was closed: nobody reads the commands any more.
    OutputClosed,
    Ended,
}

impl Listener {
    fn handle(&self, cmd: Command, res: Responder) {
        let mut line = describe(&cmd);
        let raw = matches!(cmd.kind, CommandKind::RawDown { .. });
        let (reply, default) = match (self.answers.find(&cmd), &self.exec) {
            (Some(r), _) => (Some(r.clone()), false),
            (None, Some(program)) => (Some(exec(program, &line, raw, self.exec_timeout)), false),
            (None, None) => (default_reply(&cmd.kind), true),
        };
        // A raw command's reply is bytes: a failure has no way to say so, and gets no reply.
        let reply = match reply {
            Some(Reply::Error(_, message)) if raw => {
                line["error"] = json!(message);
                None
            }
            r => r,
        };
        line["reply"] = match &reply {
            None => Value::Null,
            Some(Reply::Data(d)) => json!({"code": 200, "data": d}),
            Some(Reply::Error(code, message)) => json!({"code": code, "message": message}),
            Some(Reply::Raw(bytes)) => json!({"hex": parse::to_hex(bytes)}),
        };
        if default && reply.is_some() {
            line["reply"]["default"] = json!(true);
        }
        let printed = {
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{line}").and_then(|()| stdout.flush())
        };
        match reply {
            None => drop(res),
            Some(Reply::Data(d)) => res.ok(d),
            Some(Reply::Error(code, message)) => res.error(code, &message),
            Some(Reply::Raw(bytes)) => res.raw(bytes),
        }
        // Nobody reads what is printed any more (`enos listen | head -3`): stop listening.
        if printed.is_err_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) {
            let _ = self.stop.send(Stop::OutputClosed);
            return;
        }
        let seen = self.seen.fetch_add(1, Ordering::SeqCst) + 1;
        if self.count.is_some_and(|n| seen >= n) {
            let _ = self.stop.send(Stop::Count);
        }
    }
}

/// The SDK's own default, as it answers a command that has no handler: none for raw,
/// an empty success for traffic control, else 1101.
fn default_reply(kind: &CommandKind) -> Option<Reply> {
    match kind {
        CommandKind::RawDown { .. } => None,
        CommandKind::TrafficControl { .. } => Some(Reply::Data(json!({}))),
        _ => Some(Reply::Error(CODE_NO_HANDLER, MESSAGE_NO_HANDLER.to_owned())),
    }
}

/// The program `--exec` names: a path as it is (it must exist), a bare name found on
/// `path` (the `PATH` variable) as the system would find it.
///
/// # Errors
///
/// [`CliError::Io`] (exit 5) when there is no such file, or no such program on `PATH`.
fn resolve_program(program: &Path, path: Option<&std::ffi::OsStr>) -> Result<PathBuf, CliError> {
    let missing = |why: &str| CliError::io(format!("--exec {}", program.display()), why);
    if program.components().count() > 1 {
        return if program.is_file() { Ok(program.to_owned()) } else { Err(missing("no such file")) };
    }
    std::env::split_paths(path.unwrap_or_default())
        .map(|dir| dir.join(program))
        .find(|p| is_program(p))
        .ok_or_else(|| missing("no such program on PATH"))
}

/// Whether `p` is a file that can be run.
fn is_program(p: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(p) else { return false };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.is_file() && meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    meta.is_file()
}

/// Runs `program` with the command on its standard input: the reply it gives, or an
/// error reply (1102) saying why not.
fn exec(program: &Path, command: &Value, raw: bool, timeout: Duration) -> Reply {
    let failed = |why: String| Reply::Error(CODE_HANDLER_FAILED, format!("command handler execution failed: {why}"));
    let name = program.display();
    let output = match run_program(program, &format!("{command}\n"), timeout) {
        Ok(o) => o,
        Err(why) => return failed(why),
    };
    let text = String::from_utf8_lossy(&output);
    let text = text.trim();
    if raw {
        let hex = serde_json::from_str::<String>(text).unwrap_or_else(|_| text.to_owned());
        return match parse::hex(&hex) {
            Ok(bytes) => Reply::Raw(bytes),
            Err(e) => failed(format!("{name} printed no hex answer: {e}")),
        };
    }
    if text.is_empty() {
        return failed(format!("{name} printed no JSON answer"));
    }
    match serde_json::from_str(text) {
        Ok(v) => Reply::Data(v),
        Err(e) => failed(format!("{name} printed no JSON answer: {e}")),
    }
}

/// Runs `program` with `input` on its standard input and returns its standard output;
/// a failure to start, a non-zero exit (with the last line of its standard error) or a
/// run past `timeout` (the program is killed) is an error.
fn run_program(program: &Path, input: &str, timeout: Duration) -> Result<Vec<u8>, String> {
    let name = program.display();
    let mut child = Process::new(program)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{name} could not be started: {e}"))?;
    let stdin = child.stdin.take();
    let input = input.to_owned();
    std::thread::spawn(move || {
        if let Some(mut s) = stdin {
            // A program that does not read its input is not an error.
            let _ = s.write_all(input.as_bytes());
        }
    });
    // Each pipe read up to the ceiling, then drained (a program blocked on a full pipe
    // would not end): its bytes, and whether there were more.
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut more = false;
            if let Some(mut p) = pipe {
                let _ = p.by_ref().take(MAX_EXEC_OUTPUT + 1).read_to_end(&mut buf);
                if buf.len() as u64 > MAX_EXEC_OUTPUT {
                    more = true;
                    buf.truncate(MAX_EXEC_OUTPUT as usize);
                    let _ = std::io::copy(&mut p, &mut std::io::sink());
                }
            }
            let _ = tx.send((buf, more));
        });
        rx
    };
    let stdout = reader(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = reader(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    // No deadline this clock can reach is none at all.
    let deadline = Instant::now().checked_add(timeout);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if deadline.is_some_and(|d| Instant::now() >= d) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{name} did not finish within {} s and was killed", timeout.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("waiting for {name}: {e}")),
        }
    };
    // A program that left a child holding its output is not waited for long.
    let collect = |rx: mpsc::Receiver<(Vec<u8>, bool)>| rx.recv_timeout(Duration::from_secs(1)).unwrap_or_default();
    let (out, more) = collect(stdout);
    if !status.success() {
        let (err, _) = collect(stderr);
        let err = String::from_utf8_lossy(&err);
        let last = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
        let last: String = last.chars().take(200).collect();
        let how =
            status.code().map_or_else(|| "was killed by a signal".to_owned(), |c| format!("exited with status {c}"));
        return Err(if last.is_empty() { format!("{name} {how}") } else { format!("{name} {how}: {last}") });
    }
    if more {
        return Err(format!("{name} printed more than {} MiB", MAX_EXEC_OUTPUT >> 20));
    }
    Ok(out)
}

/// Runs `enos listen` until `--count` commands, Ctrl-C, or the client's end.
///
/// # Errors
///
/// An answer or sub-device that does not parse, a program that does not exist, the
/// connection's error.
pub fn run(
    args: &ListenArgs,
    settings: &Settings,
    out: Out,
    sending: Sending,
    as_device: Option<&DeviceKeys>,
) -> Result<u8, CliError> {
    let answers = Answers::parse(&args.answer)?;
    let subs = args
        .sub
        .iter()
        .map(|s| parse_keys(s).map_err(|e| CliError::input("--sub", e)))
        .collect::<Result<Vec<_>, _>>()?;
    let exec = args.exec.as_deref().map(|p| resolve_program(p, std::env::var_os("PATH").as_deref())).transpose()?;
    let session = Session::open(settings, out, sending, as_device)?;
    for sub in &subs {
        session.login(settings, sub, out)?;
    }
    let (stop_tx, stop_rx) = mpsc::channel();
    let listener = Arc::new(Listener {
        answers,
        exec,
        exec_timeout: Duration::from_secs(args.exec_timeout),
        count: args.count,
        seen: AtomicU64::new(0),
        stop: stop_tx.clone(),
    });
    let handler = {
        let l = listener.clone();
        move |c: Command, r: Responder| l.handle(c, r)
    };
    let commands = session.client.device_command();
    commands.on_invoke_service("*", None, handler.clone());
    commands.on_set_measurepoint(None, handler.clone());
    commands.on_get_measurepoint(None, handler.clone());
    commands.on_down_raw_model(None, handler.clone());
    commands.on_ota_upgrade(None, handler.clone());
    commands.on_device_state(handler.clone());
    commands.on_traffic_control(None, handler.clone());
    let management = session.client.sub_device_management();
    management.on_sub_devices_enable(handler.clone());
    management.on_sub_devices_disable(handler.clone());
    management.on_sub_devices_delete(handler);

    let closing = Arc::new(AtomicBool::new(false));
    let mut events = session.client.events();
    {
        let (closing, stop) = (closing.clone(), stop_tx.clone());
        std::thread::spawn(move || {
            while let Some(e) = events.recv() {
                if closing.load(Ordering::SeqCst) {
                    continue;
                }
                match e {
                    ClientEvent::Connect { reconnect: true } => eprintln!("enos: reconnected"),
                    ClientEvent::Close { cause } => eprintln!("enos: connection lost ({cause}); reconnecting"),
                    ClientEvent::Error(e) => out.note(&e.to_string()),
                    _ => {}
                }
            }
            let _ = stop.send(Stop::Ended);
        });
    }
    crate::signals::on_interrupt(move || {
        let _ = stop_tx.send(Stop::Signal);
    })?;
    let who = match (&session.target, subs.is_empty()) {
        (Some(t), _) => format!("{} (as {t})", session.device),
        (None, true) => session.device.to_string(),
        (None, false) => {
            format!("{} with {}", session.device, subs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))
        }
    };
    eprintln!("enos: listening as {who} on {} (Ctrl-C to stop)", session.url);
    let why = stop_rx.recv().unwrap_or(Stop::Ended);
    closing.store(true, Ordering::SeqCst);
    session.close();
    match why {
        Stop::Count | Stop::Signal | Stop::OutputClosed => Ok(crate::error::exit::OK),
        Stop::Ended => Err(CliError::Lost("the client ended".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_or_say_why() {
        let a = Answers::parse(&[
            r#"service=reset:{"done":true}"#.into(),
            "service=*:error=2001:busy: try later".into(),
            "set={}".into(),
            "raw=0a0b".into(),
        ])
        .unwrap();
        assert_eq!(a.0[&Kind::Service(Some("reset".into()))], Reply::Data(json!({"done": true})));
        assert_eq!(a.0[&Kind::Service(None)], Reply::Error(2001, "busy: try later".into()));
        assert_eq!(a.0[&Kind::Raw], Reply::Raw(vec![10, 11]));
        for (bad, why) in [
            ("service=reset", "service=ID:REPLY"),
            ("set={", "not JSON"),
            ("nope={}", "unknown kind"),
            ("raw=zz", "hex"),
            ("get=error=x", "not a number"),
        ] {
            let e = Answers::parse(&[bad.into()]).unwrap_err();
            assert!(e.to_string().contains(why) && e.exit_code() == 2, "{bad}: {e}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_program_answers_or_its_failure_is_the_reply() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("enos-cli-exec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = |name: &str, body: &str| {
            let p = dir.join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            p
        };
        let cmd = json!({"kind": "service"});
        let t = Duration::from_secs(5);
        assert_eq!(exec(&script("ok", "read x; echo '{\"a\":1}'"), &cmd, false, t), Reply::Data(json!({"a": 1})));
        let Reply::Error(1102, m) = exec(&script("fail", "echo boom >&2; exit 3"), &cmd, false, t) else { panic!() };
        assert!(m.contains("exited with status 3: boom"), "{m}");
        let Reply::Error(1102, m) = exec(&script("bad", "echo nope"), &cmd, false, t) else { panic!() };
        assert!(m.contains("printed no JSON answer"), "{m}");
        let Reply::Error(1102, m) = exec(&script("slow", "sleep 5"), &cmd, false, Duration::from_millis(200)) else {
            panic!()
        };
        assert!(m.contains("killed"), "{m}");
        let Reply::Error(1102, m) = exec(&dir.join("absent"), &cmd, false, t) else { panic!() };
        assert!(m.contains("could not be started"), "{m}");
        assert_eq!(exec(&script("raw", "echo 0a0b"), &cmd, true, t), Reply::Raw(vec![10, 11]));
        // Over 1 MiB of output: said, not cut silently (and the program is not left
        // blocked on a full pipe until its timeout).
        let big = script("big", "head -c 1100000 /dev/zero | tr '\\0' 1");
        let Reply::Error(1102, m) = exec(&big, &cmd, false, t) else { panic!() };
        assert!(m.ends_with("printed more than 1 MiB"), "{m}");
    }

    #[cfg(unix)]
    #[test]
    fn a_bare_program_name_is_found_on_path_at_the_start() {
        let path = std::env::var_os("PATH");
        let sh = resolve_program(Path::new("sh"), path.as_deref()).unwrap();
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{}", sh.display());
        let e = resolve_program(Path::new("no-such-enos-handler"), path.as_deref()).unwrap_err();
        assert!(e.exit_code() == 5 && e.to_string().contains("no such program on PATH"), "{e}");
        let e = resolve_program(Path::new("./no-such-enos-handler"), path.as_deref()).unwrap_err();
        assert!(e.exit_code() == 5 && e.to_string().contains("no such file"), "{e}");
        // A file that cannot be run is no program.
        assert!(resolve_program(Path::new("passwd"), Some(std::ffi::OsStr::new("/etc"))).is_err());
    }
}
