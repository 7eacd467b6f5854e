#!/usr/bin/env bash
# The vendor's own Python SDK (enos-mqtt-sdk-python 0.1.1) against enos-sim: directly, and
# through mosquitto with `enos-sim serve --responder`. Makes its virtual environment in
# target/interop-python on first use; needs python3 (with venv) and mosquitto.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=target/interop-python
# The SDK asks for paho-mqtt >= 1.4 but was written for 1.x: 2.x changed Client().
if ! "$VENV/bin/python" -c 'import enos, paho' >/dev/null 2>&1; then
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check enos-mqtt-sdk-python==0.1.1 paho-mqtt==1.6.1
fi
cargo build -p enos-sim --bin enos-sim
exec "$VENV/bin/python" interop/python-sdk/run.py --sim target/debug/enos-sim
