"""
The ``unix`` transport, found by Digital Spring through Twisted's plugin
system.  Kept to this one line: an import error here is silent.
"""

from dspring_unix import UnixTransportPlugin

unix = UnixTransportPlugin()
