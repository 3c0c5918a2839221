"""Compares our compiled protobuf descriptors with the official ones.

Usage: python3 tests/wire_compat.py OURS.binpb

OURS.binpb is a serialized google.protobuf.FileDescriptorSet (the Rust test
writes prebuildd's). The official descriptors are those that PyPI
gitpod-sdk==1.2.0 ships in gitpod/v1/*_pb2.py.

gitpod/v1/prebuild.proto is compared whole, in both directions: every
message (nested ones too), field, enum value and service method. The official
identity.proto and pagination.proto also hold types PrebuildService does not
use (IdentityService, Sort, ...); ours hold only what it uses, so for those
two files everything we define must match exactly, and official definitions
we leave out are listed, not failed. A difference is printed on its own line
and the exit status is 1.
Exit status 2: the official package is not installed.
"""

import sys

from google.protobuf import descriptor_pb2

FILES = ["gitpod/v1/prebuild.proto", "gitpod/v1/identity.proto", "gitpod/v1/pagination.proto"]
# Files whose official definitions we may leave out (see the docstring).
SUBSET_FILES = {"gitpod/v1/identity.proto", "gitpod/v1/pagination.proto"}
MODULES = ["gitpod.v1.prebuild_pb2", "gitpod.v1.identity_pb2", "gitpod.v1.pagination_pb2"]


def official_files():
    import importlib

    files = {}
    for module_name in MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            print(f"cannot import {module_name} ({error}); pip install gitpod-sdk==1.2.0", file=sys.stderr)
            sys.exit(2)
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        files[proto.name] = proto
    return files


def our_files(path):
    with open(path, "rb") as handle:
        descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(handle.read())
    return {f.name: f for f in descriptor_set.file}


def field_facts(field):
    return {
        "number": field.number,
        "type": descriptor_pb2.FieldDescriptorProto.Type.Name(field.type),
        "type_name": field.type_name.lstrip("."),
        "label": descriptor_pb2.FieldDescriptorProto.Label.Name(field.label),
        "proto3_optional": field.proto3_optional,
        "oneof": field.HasField("oneof_index"),
        "json_name": field.json_name or None,
        "deprecated": field.options.deprecated,
    }


def collect(files):
    """Flattens files into {"kind name": facts} for comparison, and records
    each key's file in ORIGIN."""
    facts = {}

    def message(prefix, msg):
        name = f"{prefix}.{msg.name}"
        facts[f"message {name}"] = {"fields": sorted(f.name for f in msg.field), "oneofs": sorted(o.name for o in msg.oneof_decl)}
        for field in msg.field:
            facts[f"field {name}.{field.name}"] = field_facts(field)
        for nested in msg.nested_type:
            if not nested.options.map_entry:
                message(name, nested)
        for nested_enum in msg.enum_type:
            enum(name, nested_enum)

    def enum(prefix, en):
        name = f"{prefix}.{en.name}"
        facts[f"enum {name}"] = {v.name: v.number for v in en.value}

    for file_name in FILES:
        proto = files.get(file_name)
        if proto is None:
            continue
        facts[f"file {file_name}"] = {"package": proto.package, "syntax": proto.syntax or "proto2"}
        before = set(facts)
        for msg in proto.message_type:
            message(proto.package, msg)
        for en in proto.enum_type:
            enum(proto.package, en)
        for service in proto.service:
            service_name = f"{proto.package}.{service.name}"
            facts[f"service {service_name}"] = sorted(m.name for m in service.method)
            for method in service.method:
                facts[f"method {service_name}.{method.name}"] = {
                    "input": method.input_type.lstrip("."),
                    "output": method.output_type.lstrip("."),
                    "client_streaming": method.client_streaming,
                    "server_streaming": method.server_streaming,
                    "idempotency_level": descriptor_pb2.MethodOptions.IdempotencyLevel.Name(method.options.idempotency_level),
                }
        for key in set(facts) - before:
            ORIGIN[key] = file_name
    return facts


ORIGIN = {}


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    official = collect(official_files())
    ours = collect(our_files(sys.argv[1]))
    problems = []
    left_out = []
    for key in sorted(set(official) | set(ours)):
        if key not in ours and ORIGIN.get(key) in SUBSET_FILES:
            left_out.append(key)
        elif key not in ours:
            problems.append(f"missing in ours: {key} = {official[key]}")
        elif key not in official:
            problems.append(f"not in the official schema: {key} = {ours[key]}")
        elif ours[key] != official[key]:
            theirs, mine = official[key], ours[key]
            if isinstance(theirs, dict) and isinstance(mine, dict):
                for fact in sorted(set(theirs) | set(mine)):
                    if theirs.get(fact) != mine.get(fact):
                        problems.append(f"{key}: {fact} is {mine.get(fact)!r}, official {theirs.get(fact)!r}")
            else:
                problems.append(f"{key}: ours {mine!r}, official {theirs!r}")
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} wire difference(s)")
        return 1
    for key in left_out:
        print(f"left out (not used by PrebuildService): {key}")
    count = lambda kind: sum(1 for k in ours if k.startswith(kind + " ") and ORIGIN.get(k, "").startswith("gitpod/"))
    print(f"wire compatible: {count('message')} messages, {count('field')} fields, {count('enum')} enums, {count('method')} methods")
    return 0


if __name__ == "__main__":
    sys.exit(main())
