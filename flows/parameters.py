"""The flow's typed parameters: what the Prefect UI's custom-run form shows as fields.

`StyleOverrides` is derived from `StyleParams.specs()`: one optional field per StyleParams field,
with its type, its help as the description, its choices as an enum, and its range checked.
None means "not overridden" (the manifest's cell, else the default). Text as a manifest cell has
it ("256,362", "block4_conv2") is accepted too, so deployments made before these models keep working.

`StorageOptions` names the S3 options `nst run` has flags for; other s3fs options pass through.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from nst_core.params import StyleParams, as_text
from nst_core.storage import Storage

OutputFormat = Literal["png", "png16", "tiff16"]  # nst_core.image_io.OUTPUT_FORMATS, as a type
# How a run runs, with the ranges its flags and the flow's parameters share (run_value checks a flag's text).
BatchSize = Annotated[int, Field(ge=1, le=1024, description="pictures of one size painted together")]
MemoryLimitGB = Annotated[float, Field(gt=0, allow_inf_nan=False, description="memory the run may use, in GB")]
Workers = Annotated[int, Field(ge=1, le=1024, description="pairs painted at once, or Dask processes")]


def run_value(kind, text: str):
    """`text` (a flag's) as `kind` (BatchSize, MemoryLimitGB, Workers), or ValueError saying why not."""
    try:
        return TypeAdapter(kind).validate_python(text)
    except ValidationError as error:
        raise ValueError(f"{error.errors()[0]['msg'].replace('Input should be', 'must be')}, got {text!r}") from None


def _field_type(hint) -> Any:
    """The StyleParams type as the form shows it: tuples as lists, Optional[X] as X (None: not set)."""
    args = get_args(hint)
    if type(None) in args:
        return _field_type(next(a for a in args if a is not type(None)))
    if get_origin(hint) is tuple:
        return list[args[0]]
    return hint


def _description(spec) -> str:
    """The field's help, and its default as typed in a flag or a cell ("block4_conv2", "256,362")."""
    shown = as_text(spec.default)
    return f"{spec.help} (default: {'none' if shown in ('', None) else shown})"


class _Overrides(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field name is an error, not ignored

    @model_validator(mode="before")
    @classmethod
    def _parse_text(cls, values):
        """Cells as text ("256,362"), as older deployments and manifests give them, typed."""
        if not isinstance(values, dict):
            return values
        return {
            name: StyleParams.parse(name, value)
            if isinstance(value, str) and name in StyleParams.field_names()
            else value
            for name, value in values.items()
        }

    @field_validator("*")
    @classmethod
    def _in_range(cls, value, info):
        spec = _SPECS[info.field_name]
        problem = None if value is None else spec.problem(tuple(value) if isinstance(value, list) else value)
        if problem:
            raise ValueError(problem)
        return value

    def given(self) -> dict:
        """The overridden fields, as StyleParams holds them (lists as tuples)."""
        return {
            name: tuple(value) if isinstance(value, list) else value
            for name, value in self.model_dump(exclude_none=True).items()
        }


_SPECS = {spec.name: spec for spec in StyleParams.specs()}

StyleOverrides = create_model(
    "StyleOverrides",
    __base__=_Overrides,
    __module__=__name__,
    __doc__="Stylization parameters for every pair; a row's own cell wins only where a field is left empty.",
    **{
        spec.name: (
            Optional[_field_type(spec.hint)],
            Field(
                None, description=_description(spec), json_schema_extra=dict(spec.check.schema) if spec.check else None
            ),
        )
        for spec in StyleParams.specs()
    },
)


class StorageOptions(BaseModel):
    """How to reach S3 (s3fs options); credentials come from the environment or the profile."""

    model_config = ConfigDict(extra="allow")  # any other s3fs option passes through

    endpoint_url: Optional[str] = Field(None, description="an S3-compatible endpoint, e.g. http://minio:9000")
    profile: Optional[str] = Field(None, description="the AWS profile to read credentials from")
    anon: Optional[bool] = Field(None, description="read public buckets without credentials")

    @model_validator(mode="after")
    def _no_credentials(self) -> "StorageOptions":
        # Prefect keeps a run's parameters in its database and shows them in its UI.
        named = _credential_names(self.model_dump())
        if named:
            raise ValueError(
                f"storage_options holds credentials ({', '.join(named)}): Prefect would store and show them; "
                "give them as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the environment, or an AWS profile"
            )
        return self

    def given(self) -> dict | None:
        """As a Storage takes them: only the options set; None when none is."""
        return self.model_dump(exclude_none=True) or None


# s3fs's `key`, `secret`, `token`, and botocore's aws_access_key_id, aws_secret_access_key, aws_session_token.
CREDENTIAL_WORDS = ("secret", "token", "password", "access_key")


def _credential_names(options: dict, prefix: str = "") -> list[str]:
    """The options set (nested ones too, as `client_kwargs.aws_secret_access_key`) that hold a credential."""
    found = []
    for name, value in options.items():
        if isinstance(value, dict):
            found += _credential_names(value, f"{prefix}{name}.")
        elif value is not None and (name.lower() == "key" or any(word in name.lower() for word in CREDENTIAL_WORDS)):
            found.append(prefix + name)
    return found


def overrides_dict(overrides: StyleOverrides | dict | None) -> dict:
    """Overrides as StyleParams holds them, from the model or a plain dict (typed or as text)."""
    if overrides is None:
        return {}
    return (overrides if isinstance(overrides, _Overrides) else StyleOverrides.model_validate(overrides)).given()


def storage_of(options: StorageOptions | dict | None) -> Storage:
    """The run's Storage, from the model or a plain dict: made once, where the flow's parameters arrive."""
    if options is None:
        return Storage()
    return Storage((options if isinstance(options, StorageOptions) else StorageOptions.model_validate(options)).given())
