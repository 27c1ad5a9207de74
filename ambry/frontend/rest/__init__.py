"""The Ambry REST API's route handlers, by resource: ``blobs`` (by id), ``named`` (named blobs,
listings, containers) and ``signedurls``, over the shared request helpers of ``base``. The app
that routes requests to them, and wraps each in request ids, CORS, metrics and the error table,
is ``ambry.frontend.app``."""
