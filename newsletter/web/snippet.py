"""``newsletter form-snippet``: the signup form as HTML to paste into another website."""

from __future__ import annotations

from newsletter.config import Settings
from newsletter.errors import ConfigError
from newsletter.render import template_environment
from newsletter.web.pages import consent_line


def form_snippet(settings: Settings) -> str:
    """The form from ``signup-form.html.j2``, posting to ``<base_url>/subscribe``.

    It has no form stamp (the page is static), so the server answers its first post with
    its own form, filled in, to press once more; see :mod:`newsletter.web.signup`.
    """
    pub = settings.publication
    if not pub.base_url:
        raise ConfigError("base_url (NEWSLETTER_BASE_URL) is not set; the form must post to your public server")
    env = template_environment(settings.templates_dir)
    form = env.get_template("signup-form.html.j2").render(
        pub=pub, action=f"{pub.base_url}/subscribe", form_token="", values={"email": "", "name": ""},
        error="", consent=consent_line(pub))
    style = "<style>.nl-signup .nl-hp{display:none}</style>\n"
    return f"<!-- {pub.name} signup form: posts to {pub.base_url}/subscribe -->\n{style}{form}"
