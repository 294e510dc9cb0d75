"""The ``validation`` section: what a pushed manifest must satisfy beyond
its own syntax.  Sparse indexes (Distribution 3's key), sparse images
(registryd's ``manifests.images.blobs``) and the URLs that
non-distributable layers may carry (``manifests.urls``, checked unless
``disabled: true`` or the deprecated ``enabled: false``)."""

import attr

from registryd.config.schema import ListOf, SectionOf, extra, not_yet, section, setting
from registryd.config.types import Boolean, Choice, Regexp


@section()
@attr.s(frozen=True, slots=True, eq=False)
class URLLists:
    """validation.manifests.urls: the patterns, read into a URLPolicy."""

    allow = setting("allow", ListOf(Regexp()), "A layer URL must match one of these.", factory=list)
    deny = setting("deny", ListOf(Regexp()), "...and none of these.", factory=list)


def _sparse(choice):
    """platforms or blobs: none accepts what is missing."""
    return choice == "none"


def _finish_validation(found):
    lists = found.values.get("url_policy")
    checking = not found.extras.get("disabled", False) and found.extras.get("enabled", True)
    policy = None
    if lists is not None and checking:
        from registryd.manifests.verify import URLPolicy

        policy = URLPolicy(lists.allow, lists.deny)
    return found.build(url_policy=policy)


@section(
    not_yet("manifests.indexes.platformlist"),
    extra("disabled", Boolean(), "true: no URL checks.", default=False),
    extra("enabled", Boolean(), "Deprecated: false is disabled: true.", default=True),
    finish=_finish_validation,
)
@attr.s(frozen=True, slots=True)
class ValidationConfig:
    """What a pushed manifest must satisfy beyond its own syntax."""

    #: validation.manifests.indexes.platforms (Distribution 3's key):
    #: "all" (default) requires every child manifest of an index to be in
    #: the repository; "none" accepts sparse indexes, as mirrors of single
    #: platforms need.
    accept_sparse_manifests = setting(
        "manifests.indexes.platforms",
        Choice("all", "none"),
        "none: accept indexes whose child manifests were not pushed.",
        default=False,
        convert=_sparse,
        shown="all",
    )
    #: validation.manifests.images.blobs (registryd's key, in the style of
    #: indexes.platforms): "all" (default) requires an image manifest's
    #: config and layers to be in the repository; "none" accepts sparse
    #: images, whose manifest can be pulled but whose blobs cannot.
    accept_sparse_images = setting(
        "manifests.images.blobs",
        Choice("all", "none"),
        "none: accept image manifests whose config and layers were not pushed.",
        default=False,
        convert=_sparse,
        shown="all",
        own=True,
    )
    #: validation.manifests.urls as a registryd.manifests.verify.URLPolicy;
    #: None (no such section, or validation.disabled) accepts any URL.
    url_policy = setting(
        "manifests.urls",
        SectionOf(URLLists),
        "URLs non-distributable layers may carry; without it, any.",
        default=None,
    )
