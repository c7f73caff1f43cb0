"""Phone calls: provider media streams (Twilio, Telnyx) and `agent phone`.

Needs the ``telephony`` extra: ``pip install 'duplex-agents[telephony]'``.
The call-control tools are the core's `duplex.agents.phone.sip_tools`.
"""

from duplex.agents.phone import DtmfBuffer, DtmfDigit, DtmfEvent, PhoneLine, sip_tools

from .control import (
    CallControl,
    CallControlError,
    TelnyxCallControl,
    TwilioCallControl,
    dial_twiml,
    stream_twiml,
)
from .dialects import (
    DIALECTS,
    Dialect,
    MediaStreamProtocolError,
    StreamStarted,
    TelnyxDialect,
    TwilioDialect,
    dialect_for,
)
from .marks import MarkTracker
from .media_stream import MediaStreamOutput, MediaStreamTransport
from .server import PhoneCall, PhoneServer
from .signatures import StreamToken, telnyx_signature_valid, twilio_signature

__all__ = [
    "DIALECTS",
    "CallControl",
    "CallControlError",
    "Dialect",
    "DtmfBuffer",
    "DtmfDigit",
    "DtmfEvent",
    "MarkTracker",
    "MediaStreamOutput",
    "MediaStreamProtocolError",
    "MediaStreamTransport",
    "PhoneCall",
    "PhoneLine",
    "PhoneServer",
    "StreamStarted",
    "StreamToken",
    "TelnyxCallControl",
    "TelnyxDialect",
    "TwilioCallControl",
    "TwilioDialect",
    "dial_twiml",
    "dialect_for",
    "sip_tools",
    "stream_twiml",
    "telnyx_signature_valid",
    "twilio_signature",
]
