"""Triton's protobuf schemas, built from servekit's own copy of their compiled descriptors.

:mod:`.model_config_pb2` (the ``config.pbtxt`` schema) and :mod:`.service_pb2` (the KServe v2
``GRPCInferenceService`` messages) offer the names of tritonclient's generated modules of the
same names, and :func:`.service_grpc.add_servicer_to_server` registers a servicer as the
generated ``service_pb2_grpc`` does. Serving therefore needs protobuf and grpcio, not
tritonclient (whose base install pulls ml_dtypes, python-rapidjson and urllib3). The
descriptors are NVIDIA's BSD-3-Clause schemas (see ``_descriptors.py``), regenerated with
``tools/vendor_triton_protos.py``.

The messages live in a descriptor pool of their own, not protobuf's default pool: the default
pool refuses a second, different ``model_config.proto``, which a tritonclient of another
version imported into the same process would bring. So they are not tritonclient's classes: a
tritonclient message crosses over as bytes (``SerializeToString`` / ``FromString``), as it does
on the wire.
"""
