"""C4 rules (Raffel et al. 2020, arXiv:1910.10683, Sec. 2.2 "Colossal Clean Crawled Corpus").

Line-level edits first (the paper keeps only lines ending in terminal punctuation, with at least
5 words, without "javascript" or cookie/policy boilerplate), then page-level drops (fewer than 3
sentences, "lorem ipsum", a curly bracket, a bad word). Unlike the Gopher rules this filter
changes the text. The "List of Dirty, Naughty, Obscene or Otherwise Bad Words" is not bundled
(licence and size); pass ``bad_words`` to enable that rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from data_pipeline.filters.drop import Drop

_TERMINAL = (".", "!", "?", '"', "'", "”", "’")  # the paper's "terminal punctuation mark"
_SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)")
# Sec. 2.2: "Many pages had boilerplate policy notices, so we removed any lines containing the
# strings 'terms of use', 'privacy policy', 'cookie policy', 'uses cookies', 'use of cookies',
# or 'use cookies'." (the last two are covered by the first of them as substrings)
C4_POLICY_SUBSTRINGS = ("terms of use", "privacy policy", "cookie policy", "uses cookies",
                        "use of cookies", "use cookies")


@dataclass
class C4Filter:
    """Drop reasons are ``c4.<rule>``."""

    enabled: bool = True
    """Run these rules (false: every document passes them, its text unchanged)."""
    line_end_punct: bool = True
    """Keep only lines that end in a terminal punctuation mark."""
    min_words_per_line: int = 5
    """"we only retained lines that contained at least 5 words"."""
    remove_javascript_lines: bool = True
    """Remove lines containing "javascript" (any case): the paper's rule against "enable Javascript" notices."""
    remove_policy_lines: bool = True
    """Remove lines containing cookie or terms-of-use boilerplate (C4_POLICY_SUBSTRINGS, the paper's list)."""
    min_sentences: int = 3
    """"We discarded any page with fewer than 3 sentences"."""
    drop_lorem_ipsum: bool = True
    """Drop any page containing "lorem ipsum" (placeholder text)."""
    drop_curly_bracket: bool = True
    """"we removed any pages that contained a curly bracket" (code; drops most code docs)."""
    bad_words: list[str] = field(default_factory=list)
    """Drop any page containing one of these words, compared with the page's lowercased whole words (\\w+ runs):
    give them lowercase, one word each. Empty by default: the paper's word list is not bundled (licence, size)."""

    name = "c4"

    def _keep_line(self, line: str) -> bool:
        s = line.strip()
        low = s.lower()
        if self.line_end_punct and not s.endswith(_TERMINAL):
            return False
        if len(s.split()) < self.min_words_per_line:
            return False
        if self.remove_javascript_lines and "javascript" in low:
            return False
        if self.remove_policy_lines and any(p in low for p in C4_POLICY_SUBSTRINGS):
            return False
        return True

    def evaluate(self, text: str) -> tuple[str, Drop | None]:
        """(the text with failing lines removed, the first page rule it breaks with its evidence, or None)."""
        low = text.lower()
        if self.drop_lorem_ipsum and "lorem ipsum" in low:
            return text, Drop("c4.lorem_ipsum", low.count("lorem ipsum"), ">=", 1)
        if self.drop_curly_bracket and "{" in text:
            return text, Drop("c4.curly_bracket", text.count("{"), ">=", 1)
        if self.bad_words:
            words = set(re.findall(r"\w+", low))
            found = sum(b in words for b in self.bad_words)
            if found:
                return text, Drop("c4.bad_word", found, ">=", 1)
        kept = "\n".join(ln for ln in text.split("\n") if ln.strip() and self._keep_line(ln))
        sentences = len(_SENTENCE_END.findall(kept))
        if sentences < self.min_sentences:
            return kept, Drop("c4.too_few_sentences", sentences, "<", self.min_sentences)
        return kept, None

    def apply(self, text: str) -> tuple[str, str | None]:
        text, drop = self.evaluate(text)
        return text, drop.reason if drop else None
