//! `ring-tools draw`: the ring as a picture.
//!
//! One band per rank (the outer band is each partition's first replica,
//! the next its second, ...), every partition a wedge in its owner's
//! colour, an outer rim in the first replica's zone colour, and a mark on
//! every partition in transfer. The SVG is written directly; a PNG is the
//! same SVG rendered by `resvg` (labels need a system font; without one the
//! picture has no text).

use std::collections::BTreeMap;
use std::f64::consts::PI;
use std::fmt::Write as _;

use quorra_core::layout::Layout;
use quorra_core::ring::Ring;
use thiserror::Error;

use crate::describe::{n_val_of, zones_of};
use crate::ownership::ownership_on;

/// Node colours, by the node's place in id order.
const NODE_COLOURS: [&str; 20] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
    "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
];
/// Zone colours.
const ZONE_COLOURS: [&str; 8] = [
    "#264653", "#2a9d8f", "#e9c46a", "#f4a261", "#e76f51", "#6d597a", "#355070", "#b56576",
];

const SIZE: f64 = 760.0;
const LEGEND: f64 = 300.0;
const CENTRE: f64 = SIZE / 2.0;
const RIM_OUT: f64 = 340.0;
const RIM_IN: f64 = 326.0;
const BANDS_OUT: f64 = 320.0;
const BANDS_IN: f64 = 150.0;

/// A picture that could not be made.
#[derive(Debug, Error)]
pub enum DrawError {
    /// The file name says neither `.svg` nor `.png`.
    #[error("--out must end in .svg or .png, got {0}")]
    Format(String),
    /// The SVG did not render.
    #[error("cannot render the picture: {0}")]
    Render(String),
    /// The file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The ring of `layout` as an SVG document.
pub fn svg(layout: &Layout) -> String {
    let ring = Ring::build(layout);
    let n = n_val_of(layout).max(1);
    let q = ring.partitions();
    let zones = zones_of(layout);
    let node_colour: BTreeMap<&str, &str> = layout
        .roles
        .keys()
        .enumerate()
        .map(|(i, id)| (id.as_str(), NODE_COLOURS[i % NODE_COLOURS.len()]))
        .collect();
    let mut zone_names: Vec<&String> = zones.values().collect();
    zone_names.sort();
    zone_names.dedup();
    let zone_colour: BTreeMap<&String, &str> = zone_names
        .iter()
        .enumerate()
        .map(|(i, z)| (*z, ZONE_COLOURS[i % ZONE_COLOURS.len()]))
        .collect();
    let moving: Vec<bool> = (0..q).map(|p| ring.before(p).is_some()).collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="13">"#,
        w = SIZE + LEGEND,
        h = SIZE
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<title>Quorra ring: layout version {}, {} partitions, n_val {}</title>"#,
        layout.version, q, n
    );
    let band = (BANDS_OUT - BANDS_IN) / n as f64;
    for p in 0..q {
        let (a0, a1) = angles(p, q);
        let order: Vec<&str> = ring.order(p).take(n).collect();
        if let Some(first) = order.first() {
            let zone = zones.get(first).and_then(|z| zone_colour.get(z));
            let _ = writeln!(
                out,
                r#"<path class="zone" d="{}" fill="{}"/>"#,
                sector(RIM_IN, RIM_OUT, a0, a1),
                zone.copied().unwrap_or("#cccccc")
            );
        }
        for (rank, id) in order.iter().enumerate() {
            let r_out = BANDS_OUT - band * rank as f64;
            let _ = writeln!(
                out,
                r#"<path class="partition" data-partition="{p}" data-rank="{rank}" data-node="{}" d="{}" fill="{}" stroke="white" stroke-width="0.3"/>"#,
                escape(id),
                sector(r_out - band, r_out, a0, a1),
                node_colour.get(id).copied().unwrap_or("#cccccc")
            );
        }
        if moving[p as usize] {
            let (x, y) = point(RIM_OUT + 8.0, (a0 + a1) / 2.0);
            let _ = writeln!(
                out,
                r#"<circle class="moving" data-partition="{p}" cx="{x:.2}" cy="{y:.2}" r="3" fill="black"/>"#
            );
        }
    }
    let _ = writeln!(
        out,
        r#"<text x="{CENTRE}" y="{}" text-anchor="middle" font-size="16">layout v{}</text>"#,
        CENTRE - 8.0,
        layout.version
    );
    let _ = writeln!(
        out,
        r#"<text x="{CENTRE}" y="{}" text-anchor="middle">{q} partitions, n_val {n}</text>"#,
        CENTRE + 14.0
    );
    legend(&mut out, layout, &ring, &node_colour, &zone_colour, &moving);
    out.push_str("</svg>\n");
    out
}

fn legend(
    out: &mut String,
    layout: &Layout,
    ring: &Ring,
    node_colour: &BTreeMap<&str, &str>,
    zone_colour: &BTreeMap<&String, &str>,
    moving: &[bool],
) {
    let own = ownership_on(layout, ring);
    let x = SIZE + 10.0;
    let mut y = 40.0;
    let _ = writeln!(
        out,
        r#"<text x="{x}" y="{y}" font-size="15">nodes (slots, zone)</text>"#
    );
    for share in &own.nodes {
        y += 20.0;
        let colour = node_colour
            .get(share.id.as_str())
            .copied()
            .unwrap_or("#ccc");
        let _ = writeln!(
            out,
            r#"<rect x="{x}" y="{}" width="14" height="14" fill="{colour}"/><text class="legend-node" x="{}" y="{y}">{} ({}, {})</text>"#,
            y - 12.0,
            x + 20.0,
            escape(&share.id),
            share.slots,
            escape(&share.zone)
        );
    }
    y += 34.0;
    let _ = writeln!(
        out,
        r#"<text x="{x}" y="{y}" font-size="15">zones (rim)</text>"#
    );
    for (zone, colour) in zone_colour {
        y += 20.0;
        let _ = writeln!(
            out,
            r#"<rect x="{x}" y="{}" width="14" height="14" fill="{colour}"/><text x="{}" y="{y}">{}</text>"#,
            y - 12.0,
            x + 20.0,
            escape(zone)
        );
    }
    let in_transfer = moving.iter().filter(|m| **m).count();
    y += 34.0;
    let _ = writeln!(
        out,
        r#"<circle cx="{}" cy="{}" r="3" fill="black"/><text x="{}" y="{y}">{in_transfer} partition(s) in transfer</text>"#,
        x + 7.0,
        y - 5.0,
        x + 20.0
    );
    y += 20.0;
    let _ = writeln!(
        out,
        r#"<text x="{x}" y="{y}">bands: outer = first replica</text>"#
    );
}

/// Start and end angle of partition `p` of `q`, clockwise from the top.
fn angles(p: u32, q: u32) -> (f64, f64) {
    let step = 2.0 * PI / f64::from(q);
    (
        f64::from(p) * step - PI / 2.0,
        f64::from(p + 1) * step - PI / 2.0,
    )
}

fn point(r: f64, a: f64) -> (f64, f64) {
    (CENTRE + r * a.cos(), CENTRE + r * a.sin())
}

/// An annular sector from angle `a0` to `a1` between radii `r0` and `r1`
/// (split in two arcs, so a whole ring of one partition draws too).
fn sector(r0: f64, r1: f64, a0: f64, a1: f64) -> String {
    let mid = (a0 + a1) / 2.0;
    let mut d = String::new();
    let (x, y) = point(r1, a0);
    let _ = write!(d, "M{x:.2},{y:.2}");
    for a in [mid, a1] {
        let (x, y) = point(r1, a);
        let _ = write!(d, " A{r1:.2},{r1:.2} 0 0 1 {x:.2},{y:.2}");
    }
    let (x, y) = point(r0, a1);
    let _ = write!(d, " L{x:.2},{y:.2}");
    for a in [mid, a0] {
        let (x, y) = point(r0, a);
        let _ = write!(d, " A{r0:.2},{r0:.2} 0 0 0 {x:.2},{y:.2}");
    }
    d.push_str(" Z");
    d
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The SVG rendered to PNG bytes, with the system's fonts for the labels
/// (`sans-serif` is the first sans face installed, else any face; with
/// none at all the picture has no text). Returns the bytes and whether
/// a font was found for the labels.
pub fn png(svg: &str) -> Result<(Vec<u8>, bool), DrawError> {
    use resvg::{tiny_skia, usvg};
    let mut options = usvg::Options::default();
    let db = options.fontdb_mut();
    db.load_system_fonts();
    let family = {
        let names = || {
            db.faces()
                .flat_map(|f| f.families.iter().map(|(n, _)| n.clone()))
        };
        names()
            .find(|n| n.contains("Sans") && !n.contains("Mono"))
            .or_else(|| names().next())
    };
    let labelled = family.is_some();
    if let Some(family) = family {
        db.set_sans_serif_family(family);
    }
    let tree = usvg::Tree::from_str(svg, &options).map_err(|e| DrawError::Render(e.to_string()))?;
    let size = tree.size().to_int_size();
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or_else(|| DrawError::Render("empty picture".into()))?;
    resvg::render(&tree, tiny_skia::Transform::default(), &mut pixmap.as_mut());
    let bytes = pixmap
        .encode_png()
        .map_err(|e| DrawError::Render(e.to_string()))?;
    Ok((bytes, labelled))
}

/// Writes the ring of `layout` to `path` (`.svg` or `.png`).
/// Returns whether the picture has its labels (a PNG needs a font).
pub fn draw(layout: &Layout, path: &std::path::Path) -> Result<bool, DrawError> {
    let name = path.display().to_string();
    let doc = svg(layout);
    let (bytes, labelled) = match path.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("svg") => (doc.into_bytes(), true),
        Some(e) if e.eq_ignore_ascii_case("png") => png(&doc)?,
        _ => return Err(DrawError::Format(name)),
    };
    std::fs::write(path, bytes).map_err(|source| DrawError::Write { path: name, source })?;
    Ok(labelled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::describe::{found, parse_nodes, Params};

    fn layout() -> Layout {
        let nodes = parse_nodes("a@z1,b@z2,c@z3,d@z1").expect("nodes");
        let params = Params {
            partitions: 64,
            ..Params::default()
        };
        found(&nodes, params).expect("layout")
    }

    #[test]
    fn the_svg_parses_and_has_a_wedge_per_partition_and_rank() {
        let doc = svg(&layout());
        let tree = resvg::usvg::Tree::from_str(&doc, &resvg::usvg::Options::default());
        assert!(tree.is_ok(), "the SVG parses: {:?}", tree.err());
        assert_eq!(doc.matches(r#"class="partition""#).count(), 64 * 3);
        assert_eq!(doc.matches(r#"class="zone""#).count(), 64);
        for id in ["a", "b", "c", "d"] {
            assert!(doc.contains(&format!(r#"data-node="{id}""#)));
        }
    }

    #[test]
    fn the_png_decodes_to_the_picture_size_with_colours() {
        let (bytes, _) = png(&svg(&layout())).expect("png");
        let pixmap = resvg::tiny_skia::Pixmap::decode_png(&bytes).expect("decodes");
        assert_eq!(pixmap.width(), (SIZE + LEGEND) as u32);
        assert_eq!(pixmap.height(), SIZE as u32);
        let colours: std::collections::BTreeSet<[u8; 4]> = pixmap
            .pixels()
            .iter()
            .map(|p| [p.red(), p.green(), p.blue(), p.alpha()])
            .collect();
        assert!(colours.len() > 8, "the wedges are coloured");
    }

    #[test]
    fn only_svg_and_png_are_written() {
        let err = draw(&layout(), std::path::Path::new("ring.gif")).unwrap_err();
        assert!(matches!(err, DrawError::Format(_)));
    }
}
