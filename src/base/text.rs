//! Text as tgknock shows it: what of a stranger's words may be shown, and how long.

/// Whether a character of a stranger's name may be shown to the owners: not a control
/// character, not a bidirectional override or isolate (which could turn the rest of the
/// summary around), not an invisible zero-width one.
pub(crate) fn shown(c: char) -> bool {
    !c.is_control()
        && !matches!(c,
            '\u{200b}'..='\u{200f}' // zero-width space, joiners, LRM, RLM
            | '\u{202a}'..='\u{202e}' // embeddings and overrides
            | '\u{2060}'..='\u{2064}' // word joiner, invisible operators
            | '\u{2066}'..='\u{2069}' // isolates
            | '\u{061c}' // Arabic letter mark
            | '\u{180e}' // Mongolian vowel separator
            | '\u{feff}' // zero-width no-break space
        )
}

/// At most 40 characters of `s`, with `…` when it was longer.
pub(crate) fn short(s: &str) -> String {
    let mut t: String = s.chars().take(40).collect();
    if t.len() < s.len() {
        t.push('…');
    }
    t
}
