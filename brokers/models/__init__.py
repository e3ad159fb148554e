from .accounts import BrokerAccount, BrokerSession, ConnectionState
from .instruments import Instrument
from .paper import PaperBook, PaperOrder, PaperPosition, PaperQuote

__all__ = [
    "BrokerAccount",
    "BrokerSession",
    "ConnectionState",
    "Instrument",
    "PaperBook",
    "PaperOrder",
    "PaperPosition",
    "PaperQuote",
]
