"""Runs suite.py twice: against `enos-sim serve` directly, and through a mosquitto broker
answered by `enos-sim serve --responder`. Both on free loopback ports.

    python run.py --sim target/debug/enos-sim
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, proc, what):
    deadline = time.time() + 20
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit("{} exited with {} before listening".format(what, proc.returncode))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("{} is not listening on {} after 20 s".format(what, port))


def stop(proc):
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_suite(mqtt_port, admin_port, token_file, via_broker):
    with open(token_file) as f:
        token = f.read().strip()
    args = [sys.executable, os.path.join(HERE, "suite.py"), "--mqtt", "127.0.0.1:{}".format(mqtt_port),
            "--admin", "127.0.0.1:{}".format(admin_port), "--token", token]
    if via_broker:
        args.append("--via-broker")
    return subprocess.run(args, timeout=600).returncode


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sim", required=True, help="the enos-sim binary")
    p.add_argument("--mosquitto", default="mosquitto")
    a = p.parse_args()
    work = tempfile.mkdtemp(prefix="enos-interop-")
    failed = []

    print("== the Python SDK against enos-sim", flush=True)
    mqtt, admin = free_port(), free_port()
    token = os.path.join(work, "direct.token")
    sim = subprocess.Popen([a.sim, "serve", "--tcp", "127.0.0.1:{}".format(mqtt), "--admin", "127.0.0.1:{}".format(admin),
                            "--token-file", token], stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "direct.log"), "w"))
    try:
        wait_listening(admin, sim, "enos-sim")
        wait_listening(mqtt, sim, "enos-sim")
        if run_suite(mqtt, admin, token, False) != 0:
            failed.append("direct")
    finally:
        stop(sim)

    print("== the Python SDK through mosquitto, answered by enos-sim --responder", flush=True)
    broker_port, admin = free_port(), free_port()
    conf = os.path.join(work, "mosquitto.conf")
    with open(conf, "w") as f:
        f.write("allow_anonymous true\npersistence false\nlistener {} 127.0.0.1\n".format(broker_port))
    broker = subprocess.Popen([a.mosquitto, "-c", conf], stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "mosquitto.log"), "w"))
    try:
        wait_listening(broker_port, broker, "mosquitto")
        token = os.path.join(work, "responder.token")
        sim = subprocess.Popen([a.sim, "serve", "--tcp", "none", "--admin", "127.0.0.1:{}".format(admin), "--token-file", token,
                                "--responder", "127.0.0.1:{}".format(broker_port)],
                               stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "responder.log"), "w"))
        try:
            wait_listening(admin, sim, "enos-sim --responder")
            if run_suite(broker_port, admin, token, True) != 0:
                failed.append("through mosquitto")
        finally:
            stop(sim)
    finally:
        stop(broker)

    if failed:
        print("FAILED: {} (logs in {})".format(", ".join(failed), work), flush=True)
        sys.exit(1)
    print("the Python SDK interoperates, directly and through mosquitto", flush=True)


if __name__ == "__main__":
    main()
