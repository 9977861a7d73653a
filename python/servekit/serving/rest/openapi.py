"""The server's OpenAPI document (``GET /v2/openapi.json``): FastAPI's description of its
routes plus the infer route, which is a plain ASGI handler FastAPI does not see.

The infer request is described as KServe v2 JSON (inputs with name, datatype, shape and data;
optional outputs, parameters and id), and the model path parameter lists the models served
when the document is asked for, so a schema-driven fuzzer (the test suite runs schemathesis)
reaches the decoder and the model validation, not only "unknown model".
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from servekit import __version__

_DATATYPES = [
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
]

_ERROR = {
    "description": "An error",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"error": {"type": "string"}},
                "required": ["error"],
            }
        }
    },
}

_INFER_REQUEST = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "inputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "datatype", "shape", "data"],
                "properties": {
                    "name": {"type": "string"},
                    "datatype": {"type": "string", "enum": _DATATYPES},
                    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                    "parameters": {"type": "object"},
                    "data": {"type": "array"},
                },
            },
        },
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
            },
        },
    },
}


def openapi_document(app: FastAPI, model_names: list[str]) -> dict[str, Any]:
    """The OpenAPI 3 document of ``app``'s routes plus ``POST /v2/models/{model}/infer``
    (and its versioned form), with ``model`` one of ``model_names``."""
    doc = get_openapi(title="servekit", version=__version__, routes=app.routes)
    model = {"type": "string", "enum": model_names} if model_names else {"type": "string"}
    responses = {
        "200": {"description": "The inference response (KServe v2 JSON)"},
        "400": _ERROR,
        "403": _ERROR,
        "404": _ERROR,
        "503": _ERROR,
    }
    body = {"required": True, "content": {"application/json": {"schema": _INFER_REQUEST}}}
    for path, extra in (
        ("/v2/models/{model}/infer", []),
        ("/v2/models/{model}/versions/{version}/infer", ["version"]),
    ):
        parameters = [{"name": "model", "in": "path", "required": True, "schema": model}]
        parameters += [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in extra
        ]
        doc["paths"][path] = {
            "post": {
                "summary": "Infer",
                "operationId": "infer" + "_version" * bool(extra),
                "parameters": parameters,
                "requestBody": body,
                "responses": responses,
            }
        }
    return doc
