from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_UNSPECIFIED: _ClassVar[Mode]
    MODE_STRIPE: _ClassVar[Mode]
    MODE_TEST: _ClassVar[Mode]
MODE_UNSPECIFIED: Mode
MODE_STRIPE: Mode
MODE_TEST: Mode

class GetConfigRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetConfigResponse(_message.Message):
    __slots__ = ("mode", "currency", "publishable_key")
    MODE_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    PUBLISHABLE_KEY_FIELD_NUMBER: _ClassVar[int]
    mode: Mode
    currency: str
    publishable_key: str
    def __init__(self, mode: _Optional[_Union[Mode, str]] = ..., currency: _Optional[str] = ..., publishable_key: _Optional[str] = ...) -> None: ...
