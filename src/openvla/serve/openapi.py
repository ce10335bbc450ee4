"""The OpenAPI description of `POST /act`: its body is read by hand (two encodings), so FastAPI cannot infer it."""

from __future__ import annotations

from typing import Any

from openvla.serve.protocol import MAX_ARRAY_DIMS, MAX_ARRAY_SIDE, MAX_CAMERAS, MAX_INSTRUCTION_CHARS

JSON_NUMPY_ARRAY = {
    "type": "object",
    "description": "a json-numpy array: base64 of the raw bytes, with dtype and shape",
    "properties": {
        "__numpy__": {"type": "string", "contentEncoding": "base64"},
        "dtype": {"type": "string", "examples": ["|u1", "<f4"],
                  "description": "bool, integer or float only (e.g. '|u1', '<f4', 'uint8')"},
        "shape": {"type": "array", "maxItems": MAX_ARRAY_DIMS,
                  "items": {"type": "integer", "minimum": 0, "maximum": MAX_ARRAY_SIDE}},
    },
    "required": ["__numpy__", "dtype", "shape"],
}
IMAGE = {"description": "uint8 H x W x 3 (also H x W grey, H x W x 4 RGBA), as a json-numpy array or nested lists "
                        "of 0..255",
         "anyOf": [JSON_NUMPY_ARRAY, {"type": "array"}]}
STATE = {"description": "proprio state in raw units, for models that take it",
         "anyOf": [JSON_NUMPY_ARRAY, {"type": "array", "items": {"type": "number"}}]}
ACT_REQUEST = {
    "type": "object",
    "properties": {
        "image": IMAGE,
        "full_image": {**IMAGE, "description": "another name for 'image' (OFT clients)"},
        "instruction": {"type": "string", "maxLength": MAX_INSTRUCTION_CHARS,
                        "description": "a VLA also caps its tokens (see /metadata max_instruction_tokens)"},
        "unnorm_key": {"type": "string", "description": "which dataset's statistics un-normalise the action"},
        "images": {"type": "object", "additionalProperties": IMAGE, "maxProperties": MAX_CAMERAS,
                   "description": "cameras by name, for models trained on several (see /metadata cameras)"},
        "wrist_image": {**IMAGE, "description": "the wrist camera, for models that take one"},
        "state": STATE,
        "proprio": {**STATE, "description": "another name for 'state'"},
    },
    "required": ["instruction"],
    "anyOf": [{"required": ["image"]}, {"required": ["full_image"]}, {"required": ["images"]}],
    "description": "other fields are ignored",
}
DOUBLE_ENCODED = {"type": "object", "properties": {"encoded": {"type": "string"}}, "required": ["encoded"],
                  "additionalProperties": False,
                  "description": "the reference's double-encoded form: the request as a JSON string"}
ACT_REPLY = {
    "type": "object",
    "properties": {
        "action": {"type": "array", "description": "[D] for one action, [chunk, D] for action chunks"},
        "server_timing": {"type": "object", "properties": {k: {"type": "number"} for k in
                                                           ("queue_ms", "infer_ms", "total_ms")}},
        "batch_size": {"type": "integer"},
        "__numpy__": {"type": "string"}, "dtype": {"type": "string"}, "shape": {"type": "array"},
    },
    "required": ["action", "server_timing", "batch_size"],
}
ERROR = {"type": "object", "properties": {"error": {"type": "string"}, "status": {"type": "integer"}},
         "required": ["error", "status"]}
MSGPACK_BODY = {"schema": {"type": "string", "format": "binary",
                           "description": "msgpack-numpy (openpi's layout): the same fields, arrays as "
                                          "{__ndarray__: true, data: bytes, dtype, shape}"}}
ERRORS = {
    "400": "the body is not JSON / msgpack, or an array in it is malformed",
    "401": "an API key is configured and the request has none or a wrong one",
    "408": "the body did not arrive within --body-timeout",
    "413": "the body is over --max-body-mb",
    "422": "a well-formed body with wrong content (field, shape, unnorm_key, instruction too long)",
    "500": "the model raised on this input",
    "503": "loading, busy (queue or memory bound full) or shutting down; retry after Retry-After",
    "504": "no answer within the request timeout",
}


def act_operation() -> dict[str, Any]:
    """``openapi_extra`` for `POST /act`: both request encodings, the reply and every error."""
    error = {"content": {"application/json": {"schema": ERROR}}}
    return {
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": {"anyOf": [ACT_REQUEST, DOUBLE_ENCODED]}},
            "application/msgpack": MSGPACK_BODY,
        }},
        "responses": {
            "200": {"description": "the action", "content": {"application/json": {"schema": ACT_REPLY},
                                                              "application/msgpack": MSGPACK_BODY}},
            **{code: {"description": text, **error} for code, text in ERRORS.items()},
        },
    }
