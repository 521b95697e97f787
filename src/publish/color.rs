//! Parsing the `--color` of the synthetic publisher.

pub fn parse_color(text: &str) -> Result<u32, String> {
    let named = match text.to_ascii_lowercase().as_str() {
        "red" => Some(0xFF0000),
        "green" => Some(0x00FF00),
        "blue" => Some(0x0000FF),
        "yellow" => Some(0xFFFF00),
        "magenta" => Some(0xFF00FF),
        "cyan" => Some(0x00FFFF),
        "white" => Some(0xFFFFFF),
        "black" => Some(0x000000),
        _ => None,
    };
    if let Some(rgb) = named {
        return Ok(rgb);
    }
    let hex = text.trim_start_matches('#');
    if hex.len() == 6 {
        if let Ok(rgb) = u32::from_str_radix(hex, 16) {
            return Ok(rgb);
        }
    }
    Err(format!(
        "color {text:?} is neither a name (red, green, blue, yellow, magenta, cyan, white, black) nor RRGGBB hex"
    ))
}

#[cfg(test)]
mod tests {
    use super::parse_color;

    #[test]
    fn names_and_hex() {
        assert_eq!(parse_color("Red"), Ok(0xFF0000));
        assert_eq!(parse_color("#00ff80"), Ok(0x00FF80));
        assert_eq!(parse_color("00FF80"), Ok(0x00FF80));
        assert!(parse_color("purple-ish").is_err());
        assert!(parse_color("#12345").is_err());
    }
}
