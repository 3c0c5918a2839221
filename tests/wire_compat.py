#!/usr/bin/env python3
"""Compares prebuildd's compiled protobuf descriptors with the official ones.

Usage: python3 tests/wire_compat.py [--strict] OURS.binpb

OURS.binpb is a serialized google.protobuf.FileDescriptorSet (the Rust test
writes prebuildd's; `buf build -o OURS.binpb --as-file-descriptor-set` makes
one too). The official descriptors are those that PyPI gitpod-sdk==1.2.0
ships as the modules gitpod.v1.prebuild_pb2, gitpod.v1.identity_pb2 and
gitpod.v1.pagination_pb2 (they import buf.validate.validate_pb2, which the
package ships as well; only their descriptors are read).

Compared, for gitpod/v1/prebuild.proto, identity.proto and pagination.proto:
the package and syntax of each file; every message, nested ones included, by
full name and file; every field by name: number, type, type_name, label,
proto3_optional, the (synthetic) oneof it belongs to, json_name, packed and
deprecated; every enum by full name with each value's name and number; every
service and method: input and output types, streaming flags,
idempotency_level and deprecated. A definition missing on either side is a
difference.

One allowance: the official identity.proto and pagination.proto also define
types that nothing in prebuild.proto refers to, directly or indirectly
(IdentityService and its messages, Sort, SortOrder, BigPaginationRequest).
prebuildd does not serve or use them, so ours may leave such a top-level
definition out entirely; it is listed as a note, not a difference. Anything
reachable from prebuild.proto, and anything we do define, must match exactly.
--strict turns the allowance off.

Each difference is printed on its own line; the exit status is then 1.
Otherwise a summary line `wire compatible: ...` is printed and it is 0.
Exit status 2: the official package is missing (pip install gitpod-sdk==1.2.0)
or the arguments are wrong.
"""

import sys

OFFICIAL_PACKAGE = "gitpod-sdk"
OFFICIAL_VERSION = "1.2.0"
INSTALL_HINT = f"pip install {OFFICIAL_PACKAGE}=={OFFICIAL_VERSION}"

# file name -> module of the official package that holds its descriptor
OFFICIAL_MODULES = {
    "gitpod/v1/prebuild.proto": "gitpod.v1.prebuild_pb2",
    "gitpod/v1/identity.proto": "gitpod.v1.identity_pb2",
    "gitpod/v1/pagination.proto": "gitpod.v1.pagination_pb2",
}
ROOT_FILE = "gitpod/v1/prebuild.proto"
# Files whose official definitions unreachable from ROOT_FILE may be absent.
SUBSET_FILES = {"gitpod/v1/identity.proto", "gitpod/v1/pagination.proto"}

try:
    from google.protobuf import descriptor_pb2
except ImportError as error:  # protobuf comes with gitpod-sdk
    print(f"cannot import google.protobuf ({error}); {INSTALL_HINT}", file=sys.stderr)
    sys.exit(2)

FieldProto = descriptor_pb2.FieldDescriptorProto


def official_files():
    """The official FileDescriptorProtos, by file name. Exits 2 when the
    package is not installed, or is another version."""
    import importlib

    try:
        from importlib import metadata

        version = metadata.version(OFFICIAL_PACKAGE)
    except Exception as error:  # PackageNotFoundError and friends
        print(f"{OFFICIAL_PACKAGE} is not installed ({error}); {INSTALL_HINT}", file=sys.stderr)
        sys.exit(2)
    if version != OFFICIAL_VERSION:
        print(f"{OFFICIAL_PACKAGE} {version} is installed, the comparison needs {OFFICIAL_VERSION}; {INSTALL_HINT}", file=sys.stderr)
        sys.exit(2)

    files = {}
    for file_name, module_name in OFFICIAL_MODULES.items():
        try:
            module = importlib.import_module(module_name)
        except Exception as error:  # ImportError, or a protobuf runtime that rejects the gencode
            print(f"cannot import {module_name} ({type(error).__name__}: {error}); {INSTALL_HINT}", file=sys.stderr)
            sys.exit(2)
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        if proto.name != file_name:
            print(f"{module_name} describes {proto.name!r}, expected {file_name!r}; {INSTALL_HINT}", file=sys.stderr)
            sys.exit(2)
        files[file_name] = proto
    return files


def our_files(path):
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(data)
    except Exception as error:
        print(f"{path} is not a serialized FileDescriptorSet: {error}", file=sys.stderr)
        sys.exit(2)
    return {f.name: f for f in descriptor_set.file}


def default_json_name(name):
    """protoc's default json_name: drop underscores, upper-case what follows."""
    out, upper = [], False
    for char in name:
        if char == "_":
            upper = True
        elif upper:
            out.append(char.upper())
            upper = False
        else:
            out.append(char)
    return "".join(out)


class Schema:
    """One side's definitions, flattened to {key: facts}, where a key is e.g.
    "field gitpod.v1.Prebuild.id" or
    "enum_value gitpod.v1.Principal.PRINCIPAL_USER". `top` maps each key to the
    full name of its top-level definition, `file` to its file, and `refs`
    holds the type references used for reachability."""

    def __init__(self, files):
        self.facts = {}
        self.top = {}
        self.file = {}
        self.refs = {}  # full name -> set of full names it needs
        for file_name in OFFICIAL_MODULES:
            proto = files.get(file_name)
            if proto is None:
                continue
            self._add(f"file {file_name}", {"package": proto.package, "syntax": proto.syntax or "proto2"}, None, file_name)
            for message in proto.message_type:
                self._message(file_name, proto.package, message, None)
            for enum in proto.enum_type:
                self._enum(file_name, proto.package, enum, None)
            for service in proto.service:
                self._service(file_name, proto.package, service)

    def _add(self, key, facts, top, file_name):
        self.facts[key] = facts
        self.top[key] = top
        self.file[key] = file_name

    def _message(self, file_name, prefix, message, top):
        name = f"{prefix}.{message.name}"
        nested = top is not None
        top = top or name
        oneofs = [o.name for o in message.oneof_decl]
        self._add(
            f"message {name}",
            {
                "file": file_name,
                "fields": sorted(f.name for f in message.field),
                "oneofs": sorted(oneofs),
                "deprecated": message.options.deprecated,
                "map_entry": message.options.map_entry,
            },
            top,
            file_name,
        )
        needs = self.refs.setdefault(name, set())
        if nested:  # a nested type needs the message that holds it
            needs.add(prefix)
        for field in message.field:
            type_name = field.type_name.lstrip(".")
            if type_name:
                needs.add(type_name)
            self._add(
                f"field {name}.{field.name}",
                {
                    "number": field.number,
                    "type": FieldProto.Type.Name(field.type),
                    "type_name": type_name,
                    "label": FieldProto.Label.Name(field.label),
                    "proto3_optional": field.proto3_optional,
                    "oneof": oneofs[field.oneof_index] if field.HasField("oneof_index") else None,
                    "json_name": field.json_name if field.HasField("json_name") else default_json_name(field.name),
                    "packed": field.options.packed if field.options.HasField("packed") else None,
                    "deprecated": field.options.deprecated,
                },
                top,
                file_name,
            )
        for nested_message in message.nested_type:
            self._message(file_name, name, nested_message, top)
        for enum in message.enum_type:
            self._enum(file_name, name, enum, top)

    def _enum(self, file_name, prefix, enum, top):
        name = f"{prefix}.{enum.name}"
        self.refs.setdefault(name, set())
        if top is not None:
            self.refs[name].add(prefix)
        self._add(
            f"enum {name}",
            {
                "file": file_name,
                "values": sorted(v.name for v in enum.value),
                "deprecated": enum.options.deprecated,
                "allow_alias": enum.options.allow_alias,
            },
            top or name,
            file_name,
        )
        for value in enum.value:
            self._add(
                f"enum_value {name}.{value.name}",
                {"number": value.number, "deprecated": value.options.deprecated},
                top or name,
                file_name,
            )

    def _service(self, file_name, package, service):
        name = f"{package}.{service.name}"
        needs = self.refs.setdefault(name, set())
        self._add(
            f"service {name}",
            {"file": file_name, "methods": [m.name for m in service.method], "deprecated": service.options.deprecated},
            name,
            file_name,
        )
        for method in service.method:
            input_type, output_type = method.input_type.lstrip("."), method.output_type.lstrip(".")
            needs.update((input_type, output_type))
            self._add(
                f"method {name}.{method.name}",
                {
                    "input_type": input_type,
                    "output_type": output_type,
                    "client_streaming": method.client_streaming,
                    "server_streaming": method.server_streaming,
                    "idempotency_level": descriptor_pb2.MethodOptions.IdempotencyLevel.Name(method.options.idempotency_level),
                    "deprecated": method.options.deprecated,
                },
                name,
                file_name,
            )

    def reachable_from(self, file_name):
        """Full names needed, directly or indirectly, by the definitions of
        file_name."""
        start = {self.top[k] for k in self.facts if self.file[k] == file_name and self.top[k]}
        seen, stack = set(), list(start)
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            stack.extend(self.refs.get(name, ()))
        return seen

    def count(self, kind):
        return sum(1 for key in self.facts if key.startswith(kind + " "))


def describe(facts):
    return repr(facts) if not isinstance(facts, dict) else ", ".join(f"{k}={v!r}" for k, v in facts.items())


def compare(official, ours, strict):
    """Returns (differences, notes)."""
    differences, notes = [], []
    reachable = official.reachable_from(ROOT_FILE)
    ours_tops = {top for top in ours.top.values() if top}
    for key in sorted(set(official.facts) | set(ours.facts)):
        if key not in ours.facts:
            top = official.top[key]
            if (
                not strict
                and official.file[key] in SUBSET_FILES
                and top is not None
                and top not in reachable
                and top not in ours_tops
            ):
                if key.split(" ", 1)[1] == top:  # one note per top-level definition
                    notes.append(f"left out (nothing in {ROOT_FILE} uses it): {key}")
            else:
                differences.append(f"missing in ours: {key} ({describe(official.facts[key])})")
        elif key not in official.facts:
            differences.append(f"not in the official schema: {key} ({describe(ours.facts[key])})")
        else:
            theirs, mine = official.facts[key], ours.facts[key]
            for fact in sorted(set(theirs) | set(mine)):
                if theirs.get(fact) != mine.get(fact):
                    differences.append(f"{key}: {fact} is {mine.get(fact)!r} in ours, {theirs.get(fact)!r} in the official schema")
    return differences, notes


def main(argv):
    args = argv[1:]
    strict = "--strict" in args
    args = [a for a in args if a != "--strict"]
    if len(args) != 1 or args[0].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 2
    official = Schema(official_files())
    ours = Schema(our_files(args[0]))
    differences, notes = compare(official, ours, strict)
    for note in notes:
        print(note)
    for difference in differences:
        print(difference)
    if differences:
        print(f"{len(differences)} wire difference(s) from {OFFICIAL_PACKAGE}=={OFFICIAL_VERSION}")
        return 1
    print(
        f"wire compatible: {ours.count('message')} messages, {ours.count('field')} fields, "
        f"{ours.count('enum')} enums, {ours.count('method')} methods"
        f" ({len(notes)} official definitions that PrebuildService does not use left out)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
