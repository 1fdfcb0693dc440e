//! A QR code in the terminal, two rows of modules per line with half blocks (for
//! `totp-setup`: authenticator apps scan it off the screen).

use qrcodegen::{QrCode, QrCodeEcc};

/// Modules of light border around the code, as the standard asks (4).
const QUIET: i32 = 4;

/// `text` as a QR code. With `colour`, the terminal is told the colours (light modules
/// white, dark black), so the code scans on a light or a dark theme; without, light
/// modules are drawn as blocks, for the usual dark terminal (like `qrencode -t UTF8`).
pub(crate) fn terminal(text: &str, colour: bool) -> String {
    let Ok(qr) = QrCode::encode_text(text, QrCodeEcc::Medium) else {
        return "(too long for a QR code)\n".into();
    };
    let light = |x: i32, y: i32| !qr.get_module(x, y);
    let (start, end) = if colour {
        ("\x1b[97;40m", "\x1b[0m")
    } else {
        ("", "")
    };
    let mut out = String::new();
    let span = -QUIET..qr.size() + QUIET;
    for y in span.clone().step_by(2) {
        out.push_str(start);
        for x in span.clone() {
            out.push(
                match (light(x, y), light(x, y + 1) || y + 1 >= qr.size() + QUIET) {
                    (true, true) => '█',
                    (true, false) => '▀',
                    (false, true) => '▄',
                    (false, false) => ' ',
                },
            );
        }
        out.push_str(end);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_with_its_border() {
        let t = terminal(
            "otpauth://totp/tgknock:pi?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ",
            false,
        );
        let lines: Vec<&str> = t.lines().collect();
        let width = lines[0].chars().count();
        // A version-4 or larger code: 33+ modules and the border on each side.
        assert!(width >= 33 + 8, "{width}");
        assert_eq!(lines.len(), width.div_ceil(2));
        assert!(lines.iter().all(|l| l.chars().count() == width));
        // The border is light all round; the top-left finder pattern starts dark.
        assert!(lines[0].chars().all(|c| c == '█'));
        assert!(lines[2].chars().nth(4) == Some(' ') || lines[2].chars().nth(4) == Some('▄'));
        let coloured = terminal("x", true);
        assert!(coloured.starts_with("\x1b[97;40m") && coloured.contains("\x1b[0m\n"));
    }
}
