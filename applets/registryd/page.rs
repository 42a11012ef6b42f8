//! The registry's own page, for an admin with a browser: `GET /` lists the
//! repositories (searchable with the same index as `/v1/search`), the storage
//! used and reclaimable and the last collection's report; `GET /ui/NAME` shows
//! one repository's tags with digest, media type, platforms, compressed size,
//! created time, labels, signatures and referrers. Server-rendered HTML with
//! inline style, no script and no outside asset, readable on a phone, behind
//! the same authentication as the API, and read-only.

use super::api::{Registry, internal};
use berth::digest::Digest;
use berth::http::server::{Request, Response};
use berth::oci::{AnyManifest, ImageConfig, Parsed};
use berth::store::registry::ManifestRef;
use std::fmt::Write;
use std::io::Read;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Totals are a walk of the storage and a dry-run collection: kept a minute.
const TOTALS_TTL: Duration = Duration::from_secs(60);

/// Storage used and reclaimable, as last computed.
#[derive(Default)]
pub struct Totals {
    at: Option<Instant>,
    used: u64,
    blobs: usize,
    reclaimable: u64,
}

pub type TotalsCache = Mutex<Totals>;

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0 auto;max-width:72rem;padding:1rem;color:#222}\
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.5rem}\
table{border-collapse:collapse;width:100%;font-size:.9rem}\
th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid #ddd;vertical-align:top}\
th{background:#f4f4f4}code{font-size:.8rem;word-break:break-all}\
.num{text-align:right;white-space:nowrap}.muted{color:#666}\
form{margin:1rem 0}input[type=search]{padding:.4rem;width:min(100%,24rem)}\
@media (max-width:40rem){.wide{display:none}th,td{padding:.3rem}}";

fn page(title: &str, body: &str) -> Response {
    let html = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{}</title><style>{STYLE}</style></head><body>{body}</body></html>",
        esc(title)
    );
    Response::new(200)
        .header("Cache-Control", "no-store")
        .header(
            "Content-Security-Policy",
            "default-src 'none'; style-src 'unsafe-inline'",
        )
        .bytes("text/html; charset=utf-8", html.into_bytes())
}

/// What one tag's page row shows.
struct TagRow {
    tag: String,
    digest: Digest,
    media_type: String,
    platforms: Vec<String>,
    size: u64,
    created: Option<String>,
    labels: Vec<(String, String)>,
    signatures: usize,
    referrers: usize,
}

impl Registry {
    fn read_small(&self, name: &str, d: &Digest) -> Option<Vec<u8>> {
        let (r, _) = self.store().open_blob(name, d, 0).ok()??;
        let mut v = Vec::new();
        r.take(4 << 20).read_to_end(&mut v).ok()?;
        Some(v)
    }

    fn config_of(&self, name: &str, d: &Digest) -> Option<ImageConfig> {
        serde_json::from_slice(&self.read_small(name, d)?).ok()
    }

    fn tag_row(&self, name: &str, tag: &str) -> Option<TagRow> {
        let m = self
            .store()
            .get_manifest(name, &ManifestRef::Tag(tag.to_string()))
            .ok()??;
        let parsed = Parsed::parse(&m.bytes, None).ok()?;
        let mut row = TagRow {
            tag: tag.to_string(),
            digest: m.digest.clone(),
            media_type: m.media_type.to_string(),
            platforms: Vec::new(),
            size: 0,
            created: None,
            labels: Vec::new(),
            signatures: 0,
            referrers: 0,
        };
        let mut images = Vec::new();
        match &parsed.manifest {
            AnyManifest::Image(_) => images.push(parsed.clone()),
            AnyManifest::Index(i) => {
                for c in &i.manifests {
                    if let Some(p) = &c.platform {
                        row.platforms.push(format!("{}/{}", p.os, p.architecture));
                    }
                    if let Ok(Some(cm)) = self
                        .store()
                        .get_manifest(name, &ManifestRef::Digest(c.digest.clone()))
                        && let Ok(cp) = Parsed::parse(&cm.bytes, None)
                    {
                        images.push(cp);
                    }
                }
            }
            _ => {}
        }
        for img in &images {
            if let AnyManifest::Image(im) = &img.manifest {
                row.size += im.config.size + im.layers.iter().map(|l| l.size).sum::<u64>();
                if let Some(cfg) = self.config_of(name, &im.config.digest) {
                    if (row.platforms.is_empty()
                        || matches!(parsed.manifest, AnyManifest::Image(_)))
                        && !cfg.os.is_empty()
                    {
                        row.platforms = vec![format!("{}/{}", cfg.os, cfg.architecture)];
                    }
                    if row.created.is_none() {
                        row.created = cfg.created.clone();
                    }
                    if row.labels.is_empty()
                        && let Some(l) = cfg.config.as_ref().and_then(|c| c.labels.as_ref())
                    {
                        row.labels = l.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                    }
                }
            }
        }
        row.signatures = self
            .store()
            .signatures(name, &m.digest)
            .ok()
            .flatten()
            .map_or(0, |s| s.len());
        row.referrers = self
            .store()
            .referrers(name, &m.digest)
            .map_or(0, |r| r.len());
        Some(row)
    }

    fn totals(&self) -> (u64, usize, u64) {
        let mut t = self.totals_cache().lock().unwrap();
        if t.at.is_none_or(|a| a.elapsed() > TOTALS_TTL) {
            let opts = berth::store::gc::Options {
                dry_run: true,
                delete_untagged: self.config().gc.as_ref().is_some_and(|g| g.untagged),
                grace: self.config().gc_grace,
                retention: self.config().retention.clone(),
                stop: None,
            };
            if let Ok(r) = berth::store::gc::collect(self.store(), &opts, &mut |_| {}) {
                t.used = r.bytes_kept + r.bytes_freed;
                t.blobs = r.blobs_kept + r.blobs_removed;
                t.reclaimable = r.bytes_freed;
                t.at = Some(Instant::now());
            }
        }
        (t.used, t.blobs, t.reclaimable)
    }

    /// `GET /`: repositories, search, storage and the last collection.
    pub(super) fn home(&self, req: &Request) -> Response {
        let q = req.query("q").unwrap_or("").trim().to_ascii_lowercase();
        let repos: Vec<(String, Vec<String>)> = self
            .store()
            .catalog_snapshot()
            .into_iter()
            .filter(|(n, _)| q.is_empty() || n.contains(&q))
            .collect();
        let (used, blobs, reclaimable) = self.totals();
        let h = berth::util::human_size;
        let mut b = String::new();
        let _ = write!(
            b,
            "<h1>Registry</h1><p>{} repositories · {} in {blobs} blobs · {} reclaimable by a collection</p>\
             <form method=\"get\" action=\"/\"><input type=\"search\" name=\"q\" value=\"{}\" placeholder=\"search repositories\" aria-label=\"search\"> <button>Search</button></form>",
            self.store().repositories().len(),
            h(used),
            h(reclaimable),
            esc(&q)
        );
        let _ = write!(
            b,
            "<table id=\"repositories\"><thead><tr><th>Repository</th><th class=\"num\">Tags</th><th class=\"wide\">Newest tags</th></tr></thead><tbody>"
        );
        for (name, tags) in &repos {
            let shown: Vec<String> = tags.iter().rev().take(5).map(|t| esc(t)).collect();
            let _ = write!(
                b,
                "<tr><td><a href=\"/ui/{}\">{}</a></td><td class=\"num\">{}</td><td class=\"wide\">{}</td></tr>",
                berth::http::percent_encode(name),
                esc(name),
                tags.len(),
                shown.join(", ")
            );
        }
        if repos.is_empty() {
            b.push_str("<tr><td colspan=\"3\" class=\"muted\">no repositories</td></tr>");
        }
        b.push_str("</tbody></table><h2>Tag policies</h2><ul id=\"policies\">");
        let cfg = self.config();
        for r in &cfg.immutable {
            let _ = write!(
                b,
                "<li>immutable: tags {} of {}</li>",
                esc(&r.tags.join(", ")),
                esc(&r.repository)
            );
        }
        for r in &cfg.retention {
            let mut what = Vec::new();
            if let Some(k) = r.keep {
                what.push(format!("the newest {k} tags"));
            }
            if let Some(a) = r.max_age {
                what.push(format!("tags younger than {}h", a.as_secs() / 3600));
            }
            let except = if r.except.is_empty() {
                String::new()
            } else {
                format!(", and always {}", r.except.join(", "))
            };
            let _ = write!(
                b,
                "<li>retention: {} keeps {}{}</li>",
                esc(&r.repository),
                esc(&what.join(" that are ")),
                esc(&except)
            );
        }
        match &cfg.gc {
            Some(g) => {
                let _ = write!(
                    b,
                    "<li>collection every {}h, grace {}s, untagged manifests {}</li>",
                    g.interval.as_secs() / 3600,
                    cfg.gc_grace.as_secs(),
                    if g.untagged { "removed" } else { "kept" }
                );
            }
            None => b.push_str("<li>no scheduled collection (gc: in config.yml)</li>"),
        }
        b.push_str("</ul><h2>Last garbage collection</h2>");
        match self
            .store()
            .driver()
            .get(super::REPORT)
            .ok()
            .and_then(|d| serde_json::from_slice::<berth::store::gc::Report>(&d).ok())
        {
            Some(r) => {
                let _ = write!(
                    b,
                    "<p id=\"gc-report\">{} to {}: {} tags, {} manifests and {} blobs removed, {} freed; {} blobs ({}) kept.</p>",
                    berth::util::rfc3339(r.started),
                    berth::util::rfc3339(r.finished),
                    r.tags_removed.len(),
                    r.manifests_removed.len(),
                    r.blobs_removed,
                    h(r.bytes_freed),
                    r.blobs_kept,
                    h(r.bytes_kept)
                );
            }
            None => b.push_str("<p id=\"gc-report\" class=\"muted\">none yet</p>"),
        }
        page("Registry", &b)
    }

    /// `GET /ui/NAME`: one repository's tags.
    pub(super) fn repo_page(&self, name: &str) -> Response {
        let tags = match self.store().tags(name) {
            Ok(Some(t)) => t,
            Ok(None) => {
                return Response::new(404).bytes(
                    "text/html; charset=utf-8",
                    format!("<!DOCTYPE html><p>No repository {}. <a href=\"/\">All repositories</a></p>", esc(name)).into_bytes(),
                );
            }
            Err(e) => return internal(&e),
        };
        let h = berth::util::human_size;
        let mut b = String::new();
        let _ = write!(
            b,
            "<p><a href=\"/\">All repositories</a></p><h1>{}</h1><table id=\"tags\"><thead><tr><th>Tag</th><th>Digest</th><th class=\"wide\">Media type</th><th>Platform</th><th class=\"num\">Size</th><th class=\"wide\">Created</th><th class=\"wide\">Labels</th><th>Signed</th></tr></thead><tbody>",
            esc(name)
        );
        for t in &tags {
            let Some(r) = self.tag_row(name, t) else {
                continue;
            };
            let labels: Vec<String> = r
                .labels
                .iter()
                .map(|(k, v)| format!("{}={}", esc(k), esc(v)))
                .collect();
            let _ = write!(
                b,
                "<tr data-tag=\"{tag}\"><td>{tag}</td><td><code>{digest}</code></td><td class=\"wide\">{mt}</td><td>{pf}</td><td class=\"num\" data-bytes=\"{bytes}\">{size}</td><td class=\"wide\">{created}</td><td class=\"wide\">{labels}</td><td>{sig}</td></tr>",
                tag = esc(&r.tag),
                digest = esc(&r.digest.to_string()),
                mt = esc(&r.media_type),
                pf = esc(&r.platforms.join(", ")),
                bytes = r.size,
                size = h(r.size),
                created = esc(r.created.as_deref().unwrap_or("")),
                labels = labels.join("<br>"),
                sig = match (r.signatures, r.referrers) {
                    (0, 0) => "no".to_string(),
                    (s, 0) => format!("{s} signature(s)"),
                    (0, f) => format!("{f} referrer(s)"),
                    (s, f) => format!("{s} signature(s), {f} referrer(s)"),
                },
            );
        }
        b.push_str("</tbody></table>");
        page(name, &b)
    }
}
