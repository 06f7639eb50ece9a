"""The per-sample work limits of reading and decoding (score_corpus flags), in one value."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from pipeline.corpus.decode import MAX_ASPECT, MAX_PIXELS
from pipeline.corpus.reader import MAX_MEMBER_BYTES, MAX_MEMBERS


@dataclass(frozen=True)
class Limits:
    """A sample over any limit is an error row (`limit:`, `bomb:` or `decode:`), never a shard failure."""

    max_member_bytes: int = MAX_MEMBER_BYTES    # one tar member, read into memory only below this
    max_members: int = MAX_MEMBERS              # members of one sample
    max_pixels: int = MAX_PIXELS                # decoded image, from its header (PIL's bomb guard stays at MAX_PIXELS)
    max_aspect: float = MAX_ASPECT              # long side / short side

    def validate(self) -> None:
        """Refuse limits that are not positive, or pixels above PIL's decompression-bomb guard."""
        for name, v in asdict(self).items():
            if not v > 0:
                raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {v}")
        if self.max_pixels > MAX_PIXELS:
            raise ValueError(f"--max-pixels must be at most {MAX_PIXELS} (the decompression-bomb guard), "
                             f"got {self.max_pixels}")
        if self.max_aspect < 1:
            raise ValueError(f"--max-aspect must be >= 1, got {self.max_aspect}")

    def reader(self) -> dict[str, int]:
        """Keyword arguments of `pipeline.corpus.reader.iter_shard`."""
        return {"max_member_bytes": self.max_member_bytes, "max_members": self.max_members}

    def decoder(self) -> dict[str, float]:
        """Keyword arguments of `pipeline.corpus.decode.load_sample_image`."""
        return {"max_pixels": self.max_pixels, "max_aspect": self.max_aspect}
