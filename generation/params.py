"""What an image should be like, in our own vocabulary: the one shape of a request's parameters.

The API's serializers build it, the catalog checks it against each route's capabilities, the job
stores it (`Job.params`, through `to_json` / `from_json` only), and the provider request extends it
with the prompt. Names are ours everywhere (`safety_level`, not any upstream's spelling); each
provider module maps them onto its wire format.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True, kw_only=True)
class GenerationParams:
    count: int = 1  # images wanted (1-4)
    aspect_ratio: str = "1:1"  # "1:1", "3:4", "4:3", "9:16", "16:9", ...
    resolution: str = "1K"  # "512", "1K", "2K", "4K"
    output_format: str = "png"  # "png" | "jpeg" | "webp"
    compression_quality: int | None = None  # jpeg/webp quality 0-100
    seed: int | None = None
    negative_prompt: str | None = None
    safety_level: str | None = None  # e.g. "block_medium_and_above"
    person_generation: str | None = None  # e.g. "allow_adult"
    # Input images (reference images, the image to edit) and an optional edit mask, as stored
    # input-file ids (`file_…`, generation.files): never bytes, so Job.params stays small and the
    # worker reads the files from our store, never from a tenant's URL.
    images: tuple[str, ...] = ()
    mask: str | None = None

    def __post_init__(self) -> None:
        # Job.params stores a JSON list; keep the frozen object a tuple whatever came in.
        if not isinstance(self.images, tuple):
            object.__setattr__(self, "images", tuple(self.images))

    @property
    def is_edit(self) -> bool:
        """A request with input images (priced as an edit where the plan says so)."""
        return bool(self.images)

    def to_json(self) -> dict:
        """The parameters alone (also of a subclass instance), as stored in `Job.params`."""
        data = {f.name: getattr(self, f.name) for f in fields(GenerationParams)}
        data["images"] = list(self.images)
        return data

    @classmethod
    def from_json(cls, data: dict) -> GenerationParams:
        """Read back `Job.params`; keys that are not parameters (e.g. `model_notice`) are ignored,
        and a parameter missing from an old row takes its default."""
        return GenerationParams(**{f.name: data[f.name] for f in fields(GenerationParams) if f.name in data})
