//! Words and looks: the user's language, the organization's brand, readable header text.

use super::*;

#[test]
fn pages_speak_spanish_and_wear_the_brand() {
    let w = World::new();
    let b = Browser::new();
    let branding = Branding {
        display_name: "Clínica <Sol>".to_owned(),
        logo_url: Some("https://cdn.example/logo.png".to_owned()),
        primary_color: "#ffd000".to_owned(),
        support_contact: "help@sol.example".to_owned(),
        ..Branding::default_for("acme")
    };
    w.engine()
        .put(&keys::branding("acme"), &branding, None)
        .unwrap();
    let page = w.open(
        &b,
        &request("dr-a", "r1", T0, &[("locale", serde_json::json!("es-MX"))]),
        T0,
    );
    let h = html(&page);
    assert!(h.contains("<html lang=\"es\">"));
    assert!(h.contains("Confirma tu dirección de correo"));
    assert!(
        h.contains("Clínica &#60;Sol&#62;") || h.contains("Clínica &lt;Sol&gt;"),
        "{h}"
    );
    assert!(!h.contains("<Sol>"));
    assert!(h.contains("<img src=\"https://cdn.example/logo.png\" alt=\"\">"));
    // A light brand color gets dark text.
    assert!(h.contains("background: #ffd000; color: #000000;"));
    assert!(h.contains("¿Necesitas ayuda? Contacta a help@sol.example."));
}

#[test]
fn header_text_contrast_reaches_aa_for_any_brand_color() {
    let ratio = |a: f64, b: f64| (a.max(b) + 0.05) / (a.min(b) + 0.05);
    for bg in [
        "#000000", "#ffffff", "#1f3a5f", "#ffd000", "#777777", "#808080", "#e8eef5", "#0055ff",
    ] {
        let fg = if text_color_on(bg) == "#ffffff" {
            "#ffffff"
        } else {
            "#000000"
        };
        let r = ratio(luminance(bg), luminance(fg));
        assert!(r >= 4.5, "{bg} on {fg}: {r:.2}");
    }
}
