"""Image references, as the images layer names them: the grammar itself lives in the core
(``cairn.imageref``), where the configuration and the revision check and print references."""

from cairn.imageref import Reference, check_image, is_digest, is_short

__all__ = ["Reference", "check_image", "is_digest", "is_short"]
