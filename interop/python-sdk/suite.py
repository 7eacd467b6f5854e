"""The vendor's Python SDK (enos-mqtt-sdk-python 0.1.1) against enos-sim.

Drives the SDK through every operation it has, as a device and as a gateway, pushes every
kind of command through the simulator's admin API, and checks each reply code against
what EnOS answers (protocol spec §8-§11), the SDK's own bugs included.

    python suite.py --mqtt 127.0.0.1:11883 --admin 127.0.0.1:18080 --token TOKEN [--via-broker]

With --via-broker the devices reach a plain broker (mosquitto) that `enos-sim serve
--responder` answers through. A plain broker delivers only what a client subscribed, and
the SDK never subscribes its command topics (EnOS delivers them unasked), so the suite
subscribes them itself, as a user of that setup must.

Exit status 0 when every check held; the last line sums up what was checked.
"""

import argparse
import json
import logging
import sys
import threading
import time
import urllib.request

from enos.core.MqttClient import MqttClient
from enos.core.internal.Profile import Profile
from enos.core.login.DynamicActivationLogin import DynamicActivationLogin
from enos.core.util.StringI18n import StringI18n
from enos.message.downstream.device.SubDeviceDeleteCommand import SubDeviceDeleteCommand
from enos.message.downstream.device.SubDeviceDeleteReply import SubDeviceDeleteReply
from enos.message.downstream.device.SubDeviceDisableCommand import SubDeviceDisableCommand
from enos.message.downstream.device.SubDeviceDisableReply import SubDeviceDisableReply
from enos.message.downstream.device.SubDeviceEnableCommand import SubDeviceEnableCommand
from enos.message.downstream.device.SubDeviceEnableReply import SubDeviceEnableReply
from enos.message.downstream.ota.OtaUpgradeCommand import OtaUpgradeCommand
from enos.message.downstream.ota.OtaUpgradeReply import OtaUpgradeReply
from enos.message.downstream.tsl.MeasurepointGetCommand import MeasurepointGetCommand
from enos.message.downstream.tsl.MeasurepointGetReply import MeasurepointGetReply
from enos.message.downstream.tsl.MeasurepointSetCommand import MeasurepointSetCommand
from enos.message.downstream.tsl.MeasurepointSetReply import MeasurepointSetReply
from enos.message.downstream.tsl.ModelDownRawCommand import ModelDownRawCommand
from enos.message.downstream.tsl.ModelDownRawReply import ModelDownRawReply
from enos.message.downstream.tsl.ServiceInvocationCommand import ServiceInvocationCommand
from enos.message.downstream.tsl.ServiceInvocationReply import ServiceInvocationReply
from enos.message.upstream.ota.OtaGetVersionRequest import OtaGetVersionRequest
from enos.message.upstream.ota.OtaProgressReportRequest import OtaProgressReportRequest
from enos.message.upstream.ota.OtaVersionReportRequest import OtaVersionReportRequest
from enos.message.upstream.register.DeviceRegisterRequest import DeviceRegisterRequest
from enos.message.upstream.resume.MeasurepointResumeBatchRequest import MeasurepointResumeBatchRequest
from enos.message.upstream.resume.MeasurepointResumeRequest import MeasurepointResumeRequest
from enos.message.upstream.status.SubDeviceLoginBatchRequest import SubDeviceLoginBatchRequest
from enos.message.upstream.status.SubDeviceLoginRequest import SubDeviceLoginRequest
from enos.message.upstream.status.SubDeviceLogoutRequest import SubDeviceLogoutRequest
from enos.message.upstream.tag.TagDeleteRequest import TagDeleteRequest
from enos.message.upstream.tag.TagQueryRequest import TagQueryRequest
from enos.message.upstream.tag.TagUpdateRequest import TagUpdateRequest
from enos.message.upstream.topo.SubDeviceInfo import SubDeviceInfo
from enos.message.upstream.topo.TopoAddRequest import TopoAddRequest
from enos.message.upstream.topo.TopoDeleteRequest import TopoDeleteRequest
from enos.message.upstream.topo.TopoGetRequest import TopoGetRequest
from enos.message.upstream.tsl.AttributeDeleteRequest import AttributeDeleteRequest
from enos.message.upstream.tsl.AttributeQueryRequest import AttributeQueryRequest
from enos.message.upstream.tsl.AttributeUpdateRequest import AttributeUpdateRequest
from enos.message.upstream.tsl.EventPostRequest import EventPostRequest
from enos.message.upstream.tsl.MeasurepointPostBatchRequest import MeasurepointPostBatchRequest
from enos.message.upstream.tsl.MeasurepointPostRequest import MeasurepointPostRequest
from enos.message.upstream.tsl.ModelUpRawRequest import ModelUpRawRequest
from enos.message.upstream.tsl.TslTemplateGetRequest import TslTemplateGetRequest

# The built-in registry of `enos-sim serve` (enos_sim::registry::defaults).
DEVICE_PK, DEVICE, DEVICE_SECRET = "demo_pk", "demo_device", "demo_device_secret"
DEVICE_PRODUCT_SECRET, ACTIVATING_DEVICE = "demo_product_secret", "demo_device_new"
GATEWAY_PK, GATEWAY, GATEWAY_SECRET = "demo_gw_pk", "demo_gateway", "demo_gateway_secret"
SUB_PK = "demo_sub_pk"
SUB_1, SUB_1_SECRET = "demo_sub_1", "demo_sub_1_secret"
SUB_2, SUB_2_SECRET = "demo_sub_2", "demo_sub_2_secret"

# A down-raw payload and the device's raw answer to it.
RAW_DOWN = bytes([0x01, 0x02, 0x03, 0xFE])
RAW_DOWN_REPLY = bytes([0xCA, 0xFE])


class Checks:
    """What was checked, and what failed."""

    def __init__(self):
        self.operations = []  # (name, code)
        self.commands = []  # (name, code)
        self.failures = []

    def fail(self, what):
        self.failures.append(what)
        print("FAIL  " + what, flush=True)

    def expect(self, name, response, code, check=None):
        """An upstream operation: `response` is the SDK's answer; EnOS answers `code`."""
        got = None if response is None else int(response.get_code())
        self.operations.append((name, code))
        if got != code:
            message = None if response is None else response.get_message()
            self.fail("{}: code {} (message {!r}), EnOS answers {}".format(name, got, message, code))
            return
        if check is not None:
            problem = check(response.get_data())
            if problem:
                self.fail("{}: {}".format(name, problem))
                return
        print("ok    {:<58} {}".format(name, code), flush=True)

    def raw(self, name, response, sent):
        """A raw up: no JSON, no code; the cloud's default script echoes the bytes."""
        got = None if response is None else response.get_payload()
        self.operations.append((name, "raw echo"))
        if got != sent:
            self.fail("{}: reply {!r}, the cloud echoes {!r}".format(name, got, sent))
            return
        print("ok    {:<58} {}".format(name, "echo"), flush=True)

    def command(self, name, answer, code, check=None):
        """A pushed command: `answer` is the admin API's JSON, the device's reply as the
        cloud saw it."""
        got = answer.get("code") if isinstance(answer, dict) else None
        self.commands.append((name, code))
        if got != code:
            self.fail("{}: the cloud saw {!r}, expected code {}".format(name, answer, code))
            return
        if check is not None:
            problem = check(answer)
            if problem:
                self.fail("{}: {}".format(name, problem))
                return
        print("ok    {:<58} {}".format("command: " + name, code), flush=True)


class Admin:
    """The simulator's admin API (loopback HTTP, bearer token)."""

    def __init__(self, addr, token):
        self.base = "http://" + addr
        self.token = token

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("authorization", "Bearer " + self.token)
        if data is not None:
            req.add_header("content-type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def post(self, path, body=None):
        return self.call("POST", path, body)

    def get(self, path):
        return self.call("GET", path)[1]


def command_topics(pk, dk):
    """The topics EnOS delivers commands on without a SUBSCRIBE (spec §6, §7)."""
    return [
        "/sys/{}/{}/thing/service/+".format(pk, dk),
        "/sys/{}/{}/thing/service/measurepoint/set".format(pk, dk),
        "/sys/{}/{}/thing/service/measurepoint/get".format(pk, dk),
        "/sys/{}/{}/thing/model/down_raw".format(pk, dk),
        "/sys/{}/{}/ota/device/upgrade".format(pk, dk),
        "/ext/session/{}/{}/combine/enable".format(pk, dk),
        "/ext/session/{}/{}/combine/disable".format(pk, dk),
        "/ext/session/{}/{}/combine/delete".format(pk, dk),
        "/ext/session/{}/{}/thing/activate/info".format(pk, dk),
    ]


def connect(url, pk, dk, secret, via_broker, extra_topics=(), profile=None):
    client = MqttClient(url, pk, dk, secret) if profile is None else MqttClient(profile=profile)
    client.get_profile().set_auto_reconnect(False)
    if via_broker:
        topics = command_topics(pk, dk) + list(extra_topics)
        subscribed = threading.Event()
        acked = set()

        def on_subscribe(_client, _userdata, mid, _granted):
            acked.add(mid)
            if len(acked) == len(topics):
                subscribed.set()

        def on_connect():
            # The SDK keeps its paho client private; a broker setup must reach it.
            paho = client._MqttClient__connection._MqttConnection__paho_client
            paho.on_subscribe = on_subscribe
            for t in topics:
                paho.subscribe(t, 1)

        client.on_connect = on_connect
    client.connect()
    if not client.is_connected():
        raise SystemExit("{}/{}: the SDK did not connect to {}".format(pk, dk, url))
    if via_broker and not subscribed.wait(10):
        raise SystemExit("{}/{}: the broker did not acknowledge the command topics".format(pk, dk))
    return client


def device_operations(c, client):
    """Every upstream operation of a directly connected device."""
    c.expect("tag update", client.publish(TagUpdateRequest.builder().add_tag("site", "north").add_tags({"floor": "3"}).build()), 200)
    c.expect(
        "tag query",
        client.publish(TagQueryRequest.builder().add_key("site").add_keys(["floor"]).build()),
        200,
        lambda d: None if d == {"site": "north", "floor": "3"} else "data {!r}".format(d),
    )
    c.expect("tag delete", client.publish(TagDeleteRequest.builder().delete_tag_key("floor").build()), 200)
    c.expect(
        "tag query after delete (all)",
        client.publish(TagQueryRequest.builder().query_all().build()),
        200,
        lambda d: None if d == {"site": "north"} else "data {!r}".format(d),
    )

    c.expect("attribute update", client.publish(AttributeUpdateRequest.builder().add_attribute("name", "pump 7").add_attributes({"capacity": 4.5}).build()), 200)
    c.expect(
        "attribute query",
        client.publish(AttributeQueryRequest.builder().add_attribute("name").add_attributes(["capacity"]).build()),
        200,
        lambda d: None if d == {"name": "pump 7", "capacity": 4.5} else "data {!r}".format(d),
    )
    c.expect("attribute delete", client.publish(AttributeDeleteRequest.builder().delete_attribute("capacity").build()), 200)
    c.expect("attribute update of an attribute not in the model", client.publish(AttributeUpdateRequest.builder().add_attribute("colour", "red").build()), 1204)

    c.expect("measure point post", client.publish(MeasurepointPostRequest.builder().add_measurepoint("temp", 21.5).add_measurepoints({"humidity": 40.0}).build()), 200)
    c.expect("measure point post, a point not in the model", client.publish(MeasurepointPostRequest.builder().add_measurepoint("no_such_point", 1).build()), 1204)
    c.expect("measure point resume", client.publish(MeasurepointResumeRequest.builder().add_measure_point("temp", 19.0).set_timestamp(1600000000000).build()), 200)
    # The SDK sends its batch flags as "" unless set; the cloud takes "" as false.
    batch = MeasurepointPostBatchRequest.builder().set_requests(
        [MeasurepointPostRequest.builder().add_measurepoint("temp", 22.0).build(),
         MeasurepointPostRequest.builder().add_measurepoint("temp", 22.5).set_timestamp(int(time.time() * 1000) - 1000).build()]
    ).build()
    c.expect("measure point post batch (flags sent as \"\")", client.publish(batch), 200)
    resume_batch = MeasurepointResumeBatchRequest.builder().add_request(
        MeasurepointResumeRequest.builder().add_measure_point("humidity", 41.0).set_timestamp(1600000001000).build()
    ).build()
    c.expect("measure point resume batch (flags sent as \"\")", client.publish(resume_batch), 200)

    # The SDK builds the method as "thing.event.%s.post" + id: the topic and the method
    # disagree, which EnOS answers with 1260.
    c.expect("event post (the SDK's malformed method)", client.publish(EventPostRequest.builder().set_event_identifier("overheat").add_value("level", 2).add_values({"msg": "hot"}).build()), 1260)

    c.expect("TSL template get", client.publish(TslTemplateGetRequest.builder().build()), 200,
             lambda d: None if isinstance(d, dict) and "tslMeasurepointMap" in d else "data {!r}".format(d))

    # The SDK names its OTA methods ota.inform, ota.progress and Ota.device.getversion,
    # not what the topics say (ota.device.*): 1260 from the cloud.
    c.expect("OTA version report (the SDK's method ota.inform)", client.publish(OtaVersionReportRequest.builder().set_version("1.0.0").build()), 1260)
    c.expect("OTA progress (the SDK's method ota.progress)", client.publish(OtaProgressReportRequest.builder().set_step("50").set_desc("half").build()), 1260)
    c.expect("OTA get version (the SDK's method Ota.device.getversion)", client.publish(OtaGetVersionRequest.builder().build()), 1260)


def gateway_operations(c, gw):
    """Topology, register, sub-device sessions and posts on a sub-device's behalf."""
    c.expect("topology get (empty)", gw.publish(TopoGetRequest.builder().build()), 200,
             lambda d: None if d == [] else "data {!r}".format(d))
    add = TopoAddRequest.builder().add_sub_device(SubDeviceInfo(SUB_PK, SUB_1, SUB_1_SECRET)).add_sub_device(SubDeviceInfo(SUB_PK, SUB_2, SUB_2_SECRET)).build()
    c.expect("topology add (two sub-devices)", gw.publish(add), 200)
    c.expect("topology add with a wrong signature", gw.publish(TopoAddRequest.builder().add_sub_device(SubDeviceInfo(SUB_PK, SUB_2, "not the secret")).build()), 1255)
    c.expect(
        "topology get",
        gw.publish(TopoGetRequest.builder().build()),
        200,
        lambda d: None if sorted(x.get("deviceKey") for x in d) == [SUB_1, SUB_2] else "data {!r}".format(d),
    )

    c.expect("sub-device login", gw.publish(SubDeviceLoginRequest.builder().set_sub_device_info(SUB_PK, SUB_1, SUB_1_SECRET).build()), 200)
    c.expect("sub-device login with a wrong secret", gw.publish(SubDeviceLoginRequest.builder().set_sub_device_info(SUB_PK, SUB_2, "wrong").build()), 770)
    c.expect("measure point post for a sub-device", gw.publish(MeasurepointPostRequest.builder().set_product_key(SUB_PK).set_device_key(SUB_1).add_measurepoint("temp", 30.0).build()), 200)
    c.expect("tag update for a sub-device", gw.publish(TagUpdateRequest.builder().set_product_key(SUB_PK).set_device_key(SUB_1).add_tag("slot", "1").build()), 200)
    c.expect("measure point post for a sub-device not logged in", gw.publish(MeasurepointPostRequest.builder().set_product_key(SUB_PK).set_device_key(SUB_2).add_measurepoint("temp", 30.0).build()), 1009)
    c.expect("sub-device logout", gw.publish(SubDeviceLogoutRequest.builder().set_sub_product_key(SUB_PK).set_sub_device_key(SUB_1).build()), 200)

    # Batch login: the SDK's timestamp is seconds as a float, signed as sent.
    c.expect(
        "sub-device batch login",
        gw.publish(SubDeviceLoginBatchRequest.builder().add_sub_device_info(SUB_PK, SUB_1, SUB_1_SECRET).add_sub_device_info(SUB_PK, SUB_2, SUB_2_SECRET).build()),
        200,
        lambda d: None if sorted(x["deviceKey"] for x in d.get("loginedSubDevices", [])) == [SUB_1, SUB_2] else "data {!r}".format(d),
    )
    batch = MeasurepointPostBatchRequest.builder().set_requests(
        [MeasurepointPostRequest.builder().set_product_key(SUB_PK).set_device_key(SUB_1).add_measurepoint("temp", 31.0).build(),
         MeasurepointPostRequest.builder().set_product_key(SUB_PK).set_device_key(SUB_2).add_measurepoint("temp", 32.0).build()]
    ).build()
    c.expect("measure point post batch for two sub-devices", gw.publish(batch), 200)
    resume = MeasurepointResumeBatchRequest.builder().add_request(
        MeasurepointResumeRequest.builder().set_product_key(SUB_PK).set_device_key(SUB_2).add_measure_point("temp", 29.0).set_timestamp(1600000002000).build()
    ).build()
    c.expect("measure point resume batch for a sub-device", gw.publish(resume), 200)
    c.raw("raw up for a sub-device", gw.publish(ModelUpRawRequest.builder().set_product_key(SUB_PK).set_device_key(SUB_1).set_payload(b"\x01\x02").build()), b"\x01\x02")

    # Register: the SDK calls encode() on deviceName, so a plain string fails in the SDK
    # (bytes are not JSON); a StringI18n goes out as the i18n object EnOS expects.
    name = StringI18n("Python device")
    name.set_localized_value("en_US", "Python device")
    register = DeviceRegisterRequest.builder().add_register_information(SUB_PK, "py_registered", name, "desc", "+08:00").build()
    c.expect(
        "sub-device register",
        gw.publish(register),
        200,
        lambda d: None if isinstance(d, list) and d and d[0].get("deviceKey") == "py_registered" and d[0].get("deviceSecret") else "data {!r}".format(d),
    )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mqtt", required=True)
    p.add_argument("--admin", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--via-broker", action="store_true")
    a = p.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    url = "tcp://" + a.mqtt
    admin = Admin(a.admin, a.token)
    c = Checks()

    # --- a directly connected device, with a handler for every command kind
    seen = {}

    def on_service(msg, args):
        seen.setdefault("service", []).append((args[2], msg.get_params()))
        if args[2] == "restart":
            return ServiceInvocationReply.builder().add_output_data("delayed", msg.get_params().get("delay")).set_code(200).build()
        return ServiceInvocationReply.builder().set_message("no such service").set_code(2001).build()

    def on_set(msg, args):
        seen["set"] = msg.get_params()
        return MeasurepointSetReply.builder().set_code(200).build()

    def on_get(msg, args):
        return MeasurepointGetReply.builder().add_measureponit("temp", 21.5).set_code(200).build()

    def on_raw(msg, args):
        seen["raw"] = msg.get_payload()
        return ModelDownRawReply(RAW_DOWN_REPLY)

    def on_ota(msg, args):
        seen["ota"] = msg.get_firmware_info().version
        return OtaUpgradeReply.builder().set_code(200).build()

    device = connect(url, DEVICE_PK, DEVICE, DEVICE_SECRET, a.via_broker)
    device.register_arrived_message_handler(ServiceInvocationCommand.get_class(), on_service)
    device.register_arrived_message_handler(MeasurepointSetCommand.get_class(), on_set)
    device.register_arrived_message_handler(MeasurepointGetCommand.get_class(), on_get)
    device.register_arrived_message_handler(ModelDownRawCommand.get_class(), on_raw)
    device.register_arrived_message_handler(OtaUpgradeCommand.get_class(), on_ota)

    device_operations(c, device)
    c.raw("raw up", device.publish(ModelUpRawRequest.builder().set_payload(b"\x10\x20\x30").build()), b"\x10\x20\x30")

    d = "/devices/{}/{}".format(DEVICE_PK, DEVICE)
    _, r = admin.post(d + "/services/restart", {"delay": 5})
    c.command("service invocation", r, 200, lambda r: None if r.get("data") == {"delayed": 5} else "data {!r}".format(r.get("data")))
    _, r = admin.post(d + "/services/reset", {})
    c.command("service invocation answered with a device error code", r, 2001)
    _, r = admin.post(d + "/points/set", {"temp_setpoint": 18.5})
    c.command("measure point set", r, 200, lambda r: None if seen.get("set") == {"temp_setpoint": 18.5} else "handler saw {!r}".format(seen.get("set")))
    _, r = admin.post(d + "/points/get", ["temp"])
    c.command("measure point get", r, 200, lambda r: None if r.get("data") == {"temp": 21.5} else "data {!r}".format(r.get("data")))
    _, r = admin.post(d + "/raw", RAW_DOWN.hex())
    raw_ok = isinstance(r, dict) and r.get("reply") == RAW_DOWN_REPLY.hex() and seen.get("raw") == RAW_DOWN
    c.command("raw down", {"code": 200} if raw_ok else r, 200)
    fw = {"version": "1.1.0", "signMethod": "md5", "sign": "9E107D9D372BB6826BD81D3542A419D6", "fileUrl": "/firmware/demo-1.1.0.bin", "fileSize": 1024}
    _, r = admin.post(d + "/ota", fw)
    c.command("OTA upgrade", r, 200, lambda r: None if seen.get("ota") == "1.1.0" else "handler saw {!r}".format(seen.get("ota")))

    # --- a gateway; it registers no handler for service invocations
    gw = connect(url, GATEWAY_PK, GATEWAY, GATEWAY_SECRET, a.via_broker, command_topics(SUB_PK, SUB_1) + command_topics(SUB_PK, SUB_2))
    sub_commands = []

    def sub_handler(kind, reply):
        def handle(msg, args):
            sub_commands.append((kind, msg.get_params()))
            return reply.builder().set_code(200).build()

        return handle

    gw.register_arrived_message_handler(SubDeviceEnableCommand.get_class(), sub_handler("enable", SubDeviceEnableReply))
    gw.register_arrived_message_handler(SubDeviceDisableCommand.get_class(), sub_handler("disable", SubDeviceDisableReply))
    gw.register_arrived_message_handler(SubDeviceDeleteCommand.get_class(), sub_handler("delete", SubDeviceDeleteReply))
    gateway_operations(c, gw)

    g = "/gateways/{}/{}/sub-devices/".format(GATEWAY_PK, GATEWAY)
    one = [{"productKey": SUB_PK, "deviceKey": SUB_2}]
    _, r = admin.post(g + "disable", one)
    c.command("sub-device disable", r, 200)
    _, r = admin.post(g + "enable", one)
    c.command("sub-device enable", r, 200)
    _, r = admin.post("/devices/{}/{}/services/restart".format(SUB_PK, SUB_1), {"delay": 1})
    c.command("service invocation of a sub-device, no handler registered", r, 1101)
    _, r = admin.post(g + "delete", one)
    c.command("sub-device delete", r, 200, lambda r: None if [k for k, _ in sub_commands] == ["disable", "enable", "delete"] else "handler saw {!r}".format(sub_commands))

    # --- dynamic activation: the product secret in, the device secret out
    profile = Profile.create_instance(DynamicActivationLogin(url, DEVICE_PK, DEVICE_PRODUCT_SECRET, ACTIVATING_DEVICE))
    if not a.via_broker:  # a plain broker has no CONNECT to start activation from
        secrets = []
        got_secret = threading.Event()
        activating = MqttClient(profile=profile)
        activating.on_device_dynamic_active = lambda s: (secrets.append(s), got_secret.set())
        activating.get_profile().set_auto_reconnect(False)
        activating.connect()
        got_secret.wait(10)
        # The SDK answers after its callback returns: the cloud marks the device
        # activated when that answer arrives.
        deadline = time.time() + 10
        device_view = admin.get("/devices/{}/{}".format(DEVICE_PK, ACTIVATING_DEVICE))
        while not device_view.get("activated") and time.time() < deadline:
            time.sleep(0.05)
            device_view = admin.get("/devices/{}/{}".format(DEVICE_PK, ACTIVATING_DEVICE))
        done = len(secrets) == 1 and len(secrets[0]) > 0 and device_view.get("activated")
        c.command("dynamic activation (device secret sent, device replied)", {"code": 200} if done else {"secrets": len(secrets), "device": device_view}, 200)
        activating.close()

    for client in (device, gw):
        client.close()

    ops = len(c.operations)
    cmds = len(c.commands)
    codes = sorted({code for _, code in c.operations + c.commands if isinstance(code, int)})
    print("{} operations and {} commands checked; codes {}; {} failed".format(ops, cmds, codes, len(c.failures)), flush=True)
    sys.exit(1 if c.failures else 0)


if __name__ == "__main__":
    main()
