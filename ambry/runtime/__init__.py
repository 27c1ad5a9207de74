"""Runtime machinery the daemons share (storage node and frontend): asyncio, files, metrics.

Owns the in-flight byte budget (``budget``) and re-reading the config in a running daemon
(``reload``). ``ambry.common`` holds values and pure decisions only; what runs on the event
loop, reads files or exports metrics lives here. Imports ``ambry.common`` only.
"""
