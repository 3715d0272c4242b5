#!/usr/bin/env python3
"""A plain Python gRPC client of berthd, driven by integration/tests/grpc_clients.rs.

It uses only what any Python user has: grpcio, the standard health and reflection packages,
and stubs generated from berth's proto/ with grpc_tools.protoc, on a stock channel
(`grpc.insecure_channel(address)`, no options: grpcio sends the socket's path as :authority,
which berthd takes). It does not judge: it writes what it saw as one JSON object on stdout,
and the Rust test asserts on that.

    berth_client.py --address unix:///path/berth.sock --proto-dir proto --out-dir DIR --image REF
"""

import argparse
import glob
import importlib
import json
import os
import sys

import grpc
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

TIMEOUT = 20


def code_name(err):
    """The gRPC status code of an error, as a name like NOT_FOUND."""
    return err.code().name if isinstance(err, grpc.RpcError) else type(err).__name__


def health(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    out = {}
    for service in ["", "berth.image", "no.such.service"]:
        try:
            r = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
            out[service] = health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)
        except grpc.RpcError as e:
            out[service] = "error:" + code_name(e)
    return out


def reflect(channel, service_name):
    """Server reflection through `service_name` (grpc.reflection.v1 or v1alpha: the messages
    are the same on the wire): the services listed, and the methods of Images from the file
    descriptor that defines it."""
    call = channel.stream_stream(
        "/%s/ServerReflectionInfo" % service_name,
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    reqs = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="berth.images.v1.Images"),
    ]
    try:
        resps = list(call(iter(reqs), timeout=TIMEOUT))
    except grpc.RpcError as e:
        return {"error": code_name(e)}
    out = {"services": [], "images_methods": []}
    for r in resps:
        if r.HasField("list_services_response"):
            out["services"] = sorted(s.name for s in r.list_services_response.service)
        elif r.HasField("file_descriptor_response"):
            for raw in r.file_descriptor_response.file_descriptor_proto:
                fd = descriptor_pb2.FileDescriptorProto.FromString(raw)
                for svc in fd.service:
                    if fd.package + "." + svc.name == "berth.images.v1.Images":
                        out["images_methods"] = sorted(m.name for m in svc.method)
        elif r.HasField("error_response"):
            out.setdefault("errors", []).append(r.error_response.error_message)
    return out


def read_calls(image):
    """A harmless call of each berth service: (module, stub, method, request, how); `how` is
    "unary", "stream" (a server stream: its headers are awaited, then it is cancelled) or
    "empty-stream" (a client stream that sends nothing)."""
    return {
        "berth.build.v1.Build": ("berth.build.v1.build", "BuildStub", "Build", None, "empty-stream"),
        "berth.containers.v1.Containers": ("berth.containers.v1.containers", "ContainersStub", "List", "ListContainersRequest", "unary"),
        "berth.content.v1.Content": ("berth.content.v1.content", "ContentStub", "List", "ListContentRequest", "unary"),
        "berth.events.v1.Events": ("berth.events.v1.events", "EventsStub", "Subscribe", "SubscribeRequest", "stream"),
        "berth.images.v1.Images": ("berth.images.v1.images", "ImagesStub", "List", "ListImagesRequest", "unary"),
        "berth.leases.v1.Leases": ("berth.leases.v1.leases", "LeasesStub", "List", "ListLeasesRequest", "unary"),
        "berth.namespaces.v1.Namespaces": ("berth.namespaces.v1.namespaces", "NamespacesStub", "List", "ListNamespacesRequest", "unary"),
        "berth.networks.v1.Networks": ("berth.networks.v1.networks", "NetworksStub", "List", "ListNetworksRequest", "unary"),
        "berth.registry.v1.Registry": ("berth.registry.v1.registry", "RegistryStub", "Resolve", ("ResolveRequest", {"reference": image}), "unary"),
        "berth.snapshots.v1.Snapshots": ("berth.snapshots.v1.snapshots", "SnapshotsStub", "List", "ListSnapshotsRequest", "unary"),
        "berth.tasks.v1.Tasks": ("berth.tasks.v1.tasks", "TasksStub", "List", "ListTasksRequest", "unary"),
        "berth.version.v1.Version": ("berth.version.v1.version", "VersionStub", "Version", "VersionRequest", "unary"),
        "berth.volumes.v1.Volumes": ("berth.volumes.v1.volumes", "VolumesStub", "List", "ListVolumesRequest", "unary"),
    }


def call_each(channel, services, image):
    """One harmless call of each berth service that reflection listed: "OK", or the error code
    and details; "no call known" for a service this script does not know yet (add one to
    read_calls, and to readCalls of ../js/berth_client.js)."""
    known = read_calls(image)
    out = {}
    for service in services:
        if not service.startswith("berth."):
            continue
        if service not in known:
            out[service] = "no call known"
            continue
        module, stub_name, method, request, how = known[service]
        pb2 = importlib.import_module(module + "_pb2")
        stub = getattr(importlib.import_module(module + "_pb2_grpc"), stub_name)(channel)
        call = getattr(stub, method)
        try:
            if how == "empty-stream":
                list(call(iter([]), timeout=TIMEOUT))
            else:
                name, fields = request if isinstance(request, tuple) else (request, {})
                req = getattr(pb2, name)(**fields)
                if how == "stream":
                    stream = call(req, timeout=TIMEOUT)
                    stream.initial_metadata()  # the server answered: its stream is open
                    stream.cancel()
                else:
                    call(req, timeout=TIMEOUT)
            out[service] = "OK"
        except grpc.RpcError as e:
            out[service] = "%s: %s" % (code_name(e), e.details())
    return out


def generate_stubs(proto_dir, out_dir):
    """Python modules for every .proto of berth, with grpc_tools.protoc."""
    from grpc_tools import protoc
    import grpc_tools

    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    files = sorted(
        os.path.relpath(p, proto_dir) for p in glob.glob(os.path.join(proto_dir, "berth/**/*.proto"), recursive=True)
    )
    if not files:
        raise SystemExit("no .proto files under %s" % proto_dir)
    os.makedirs(out_dir, exist_ok=True)
    rc = protoc.main(
        ["grpc_tools.protoc", "-I" + proto_dir, "-I" + well_known, "--python_out=" + out_dir, "--grpc_python_out=" + out_dir]
        + files
    )
    if rc != 0:
        raise SystemExit("grpc_tools.protoc failed with %d on %s" % (rc, files))
    sys.path.insert(0, out_dir)
    return files


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--address", required=True, help="unix:///path/to/berth.sock")
    ap.add_argument("--proto-dir", required=True)
    ap.add_argument("--out-dir", required=True, help="where the generated stubs go")
    ap.add_argument("--ns", action="append", default=[], help="also list the images of this namespace")
    ap.add_argument("--image", required=True, help="a reference the registry service resolves")
    args = ap.parse_args()

    report = {"grpcio": grpc.__version__}
    report["protos"] = generate_stubs(args.proto_dir, args.out_dir)
    version_pb2 = importlib.import_module("berth.version.v1.version_pb2")
    version_grpc = importlib.import_module("berth.version.v1.version_pb2_grpc")
    images_pb2 = importlib.import_module("berth.images.v1.images_pb2")
    images_grpc = importlib.import_module("berth.images.v1.images_pb2_grpc")
    networks_pb2 = importlib.import_module("berth.networks.v1.networks_pb2")
    networks_grpc = importlib.import_module("berth.networks.v1.networks_pb2_grpc")

    # A stock channel, no options: to a unix: target grpcio (grpc-core since 1.57) sends the
    # socket's path, percent-encoded, as :authority (grpc/grpc#38142); berthd must take it.
    with grpc.insecure_channel(args.address) as channel:
        grpc.channel_ready_future(channel).result(timeout=TIMEOUT)
        report["health"] = health(channel)
        report["reflection_v1"] = reflect(channel, "grpc.reflection.v1.ServerReflection")
        report["reflection_v1alpha"] = reflect(channel, "grpc.reflection.v1alpha.ServerReflection")
        report["calls"] = call_each(channel, report["reflection_v1"].get("services", []), args.image)

        v = version_grpc.VersionStub(channel).Version(version_pb2.VersionRequest(), timeout=TIMEOUT)
        report["version"] = {"version": v.version, "services": list(v.services), "os": v.os, "arch": v.arch}

        images = images_grpc.ImagesStub(channel)
        lists = {}
        asks = [("(no metadata)", None)] + [(ns, [("berth-namespace", ns)]) for ns in args.ns]
        asks.append(("(invalid)", [("berth-namespace", "Not/A/Namespace")]))
        for label, metadata in asks:
            try:
                r = images.List(images_pb2.ListImagesRequest(), metadata=metadata, timeout=TIMEOUT)
                lists[label] = {"names": [i.image.name for i in r.images], "ids": [i.id for i in r.images]}
            except grpc.RpcError as e:
                lists[label] = {"error": code_name(e), "details": e.details()}
        report["list"] = lists

        try:
            images.Get(images_pb2.GetImageRequest(name="no-such-image:1"), timeout=TIMEOUT)
            report["get_missing"] = "OK"
        except grpc.RpcError as e:
            report["get_missing"] = code_name(e)

        # Networks: list, create, inspect and remove one.
        nets = networks_grpc.NetworksStub(channel)
        net = {"before": [n.name for n in nets.List(networks_pb2.ListNetworksRequest(), timeout=TIMEOUT).networks]}
        try:
            made = nets.Create(networks_pb2.CreateNetworkRequest(name="pynet"), timeout=TIMEOUT)
            got = nets.Get(networks_pb2.GetNetworkRequest(name=made.id[:12]), timeout=TIMEOUT)
            net["created"] = {"name": got.name, "driver": got.driver, "subnet": got.subnet, "bridge": got.bridge}
            nets.Remove(networks_pb2.RemoveNetworkRequest(name="pynet"), timeout=TIMEOUT)
        except grpc.RpcError as e:
            net["error"] = "%s: %s" % (code_name(e), e.details())
        try:
            nets.Remove(networks_pb2.RemoveNetworkRequest(name="bridge"), timeout=TIMEOUT)
            net["remove_builtin"] = "OK"
        except grpc.RpcError as e:
            net["remove_builtin"] = code_name(e)
        net["after"] = [n.name for n in nets.List(networks_pb2.ListNetworksRequest(), timeout=TIMEOUT).networks]
        report["networks"] = net

    json.dump(report, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
