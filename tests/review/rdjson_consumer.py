"""reviewdog's side of rdjson, for the tests: reviewdog reads `-f=rdjson` input with protojson into its
`reviewdog.rdf.DiagnosticResult` message (proto/rdf/reviewdog.proto in reviewdog's repository).
reviewdog itself is a Go binary no package index here ships, so the same message definitions are
declared below and the text goes through protobuf's JSON parser, which like protojson rejects
unknown fields, misspelled enum names and wrongly typed values.

Also reviewdog's reading of a suggestion's range: end exclusive when columns are given, columns
counted in UTF-8 bytes from 1; `apply_suggestion` replaces that range as reviewdog's suggester does.
"""

from __future__ import annotations

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    json_format,
    message_factory,
)
from google.protobuf.descriptor_pb2 import FieldDescriptorProto as Field

_PACKAGE = "reviewdog.rdf"
_STRING, _INT32, _ENUM, _MESSAGE = Field.TYPE_STRING, Field.TYPE_INT32, Field.TYPE_ENUM, Field.TYPE_MESSAGE
_MESSAGES = {  # message -> [(field, number, type, type name or None, repeated)]
    "DiagnosticResult": [("diagnostics", 1, _MESSAGE, "Diagnostic", True), ("source", 2, _MESSAGE, "Source", False),
                         ("severity", 3, _ENUM, "Severity", False)],
    "Diagnostic": [("message", 1, _STRING, None, False), ("location", 2, _MESSAGE, "Location", False),
                   ("severity", 3, _ENUM, "Severity", False), ("source", 4, _MESSAGE, "Source", False),
                   ("code", 5, _MESSAGE, "Code", False), ("suggestions", 6, _MESSAGE, "Suggestion", True),
                   ("original_output", 7, _STRING, None, False), ("images", 8, _MESSAGE, "Image", True)],
    "Location": [("path", 2, _STRING, None, False), ("range", 3, _MESSAGE, "Range", False)],
    "Range": [("start", 1, _MESSAGE, "Position", False), ("end", 2, _MESSAGE, "Position", False)],
    "Position": [("line", 1, _INT32, None, False), ("column", 2, _INT32, None, False)],
    "Suggestion": [("range", 1, _MESSAGE, "Range", False), ("text", 2, _STRING, None, False)],
    "Source": [("name", 1, _STRING, None, False), ("url", 2, _STRING, None, False)],
    "Code": [("value", 1, _STRING, None, False), ("url", 2, _STRING, None, False)],
    "Image": [("image_url", 1, _STRING, None, False), ("alt", 2, _STRING, None, False),
              ("caption", 3, _STRING, None, False)],
}
_SEVERITIES = ["UNKNOWN_SEVERITY", "ERROR", "WARNING", "INFO"]


def _file() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(name="reviewdog_rdf.proto", package=_PACKAGE, syntax="proto3")
    severity = proto.enum_type.add(name="Severity")
    for number, name in enumerate(_SEVERITIES):
        severity.value.add(name=name, number=number)
    for name, fields in _MESSAGES.items():
        message = proto.message_type.add(name=name)
        for field, number, kind, type_name, repeated in fields:
            message.field.add(name=field, number=number, type=kind,
                              type_name=f".{_PACKAGE}.{type_name}" if type_name else None,
                              label=Field.LABEL_REPEATED if repeated else Field.LABEL_OPTIONAL)
    return proto


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file())
DiagnosticResult = message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{_PACKAGE}.DiagnosticResult"))


def parse(text: str):
    """rdjson text -> a DiagnosticResult message; json_format.ParseError where reviewdog would refuse it."""
    return json_format.Parse(text, DiagnosticResult())


def apply_suggestion(source: str, suggestion) -> str:
    """The file's text with `suggestion` (a parsed Suggestion) applied; columns are UTF-8 byte offsets."""
    data = source.encode("utf-8")
    lines = data.splitlines(keepends=True)

    def offset(position) -> int:
        return sum(len(line) for line in lines[: position.line - 1]) + position.column - 1

    start, end = suggestion.range.start, suggestion.range.end
    return (data[: offset(start)] + suggestion.text.encode("utf-8") + data[offset(end):]).decode("utf-8")


def severity_name(value: int) -> str:
    return _POOL.FindEnumTypeByName(f"{_PACKAGE}.Severity").values_by_number[value].name
