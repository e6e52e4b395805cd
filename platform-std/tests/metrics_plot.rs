//! metrics.jsonl writing, resume truncation, and the SVG loss plot.

use std::fs;

use cllm_std::metrics::{read_metrics, MetricsError, MetricsRecord, MetricsWriter, METRICS_FILE};
use cllm_std::plot::{loss_svg, nice_ticks, write_loss_svg, PLOT_FILE};

fn rec(step: u64, loss: f64, val: Option<f64>) -> MetricsRecord {
    MetricsRecord {
        step,
        train_loss: loss,
        val_loss: val,
        val_bits_per_byte: None,
        lr: 1e-3,
        grad_norm: 0.5,
        tokens_per_s: 1000.0,
        elapsed_s: step as f64 * 0.1,
    }
}

#[test]
fn records_are_appended_one_json_line_each() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = MetricsWriter::create(dir.path()).unwrap();
    w.append(&rec(1, 5.0, None)).unwrap();
    w.append(&rec(2, 4.5, Some(4.7))).unwrap();
    // Flushed per record: visible without dropping the writer.
    let text = fs::read_to_string(dir.path().join(METRICS_FILE)).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    let v: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
    for k in [
        "step",
        "train_loss",
        "val_loss",
        "lr",
        "grad_norm",
        "tokens_per_s",
        "elapsed_s",
    ] {
        assert!(v.get(k).is_some(), "missing {k}");
    }
    assert!(!lines[0].contains("val_loss"));
    assert_eq!(
        read_metrics(w.path()).unwrap(),
        [rec(1, 5.0, None), rec(2, 4.5, Some(4.7))]
    );
    // A diverged (NaN) loss is stored as null and read back as NaN.
    w.append(&rec(3, f64::NAN, None)).unwrap();
    let back = read_metrics(w.path()).unwrap();
    assert!(back[2].train_loss.is_nan());
}

#[test]
fn resume_truncates_later_steps_and_partial_lines() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = MetricsWriter::create(dir.path()).unwrap();
    for s in 1..=10 {
        w.append(&rec(s, 10.0 - s as f64, None)).unwrap();
    }
    drop(w);
    // A kill in the middle of a write leaves half a line.
    let path = dir.path().join(METRICS_FILE);
    let mut text = fs::read_to_string(&path).unwrap();
    text.push_str("{\"step\":11,\"train_lo");
    fs::write(&path, &text).unwrap();

    let (mut w, kept) = MetricsWriter::resume(dir.path(), 6).unwrap();
    assert_eq!(
        kept.iter().map(|r| r.step).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    w.append(&rec(7, 0.0, None)).unwrap();
    let steps: Vec<u64> = read_metrics(&path)
        .unwrap()
        .iter()
        .map(|r| r.step)
        .collect();
    assert_eq!(steps, [1, 2, 3, 4, 5, 6, 7]);
    // Kept lines are byte-for-byte the originals.
    let now = fs::read_to_string(&path).unwrap();
    let orig_first6: Vec<&str> = text.lines().take(6).collect();
    assert_eq!(now.lines().take(6).collect::<Vec<_>>(), orig_first6);

    // Resuming where there is no log starts a new one.
    let fresh = tempfile::tempdir().unwrap();
    let (_, kept) = MetricsWriter::resume(fresh.path(), 100).unwrap();
    assert!(kept.is_empty());
    assert!(fresh.path().join(METRICS_FILE).exists());
}

#[test]
fn corrupt_complete_line_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(METRICS_FILE);
    fs::write(
        &path,
        "{\"step\":1,\"train_loss\":1,\"lr\":0,\"grad_norm\":0,\"tokens_per_s\":0,\"elapsed_s\":0}\nnot json\n",
    )
    .unwrap();
    let e = MetricsWriter::resume(dir.path(), 5).unwrap_err();
    assert!(matches!(e, MetricsError::Corrupt { line: 2, .. }), "{e}");
    assert!(e.to_string().contains("line 2"));
    // The file is left as it was.
    assert!(fs::read_to_string(&path).unwrap().contains("not json"));
}

#[test]
fn nice_ticks_are_round_and_cover_the_range() {
    assert_eq!(
        nice_ticks(0.0, 100.0, 5),
        [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]
    );
    let t = nice_ticks(1.37, 4.92, 6);
    assert_eq!(t.first().copied(), Some(1.5));
    assert_eq!(t.last().copied(), Some(4.5));
    assert!(t.windows(2).all(|w| ((w[1] - w[0]) - 0.5).abs() < 1e-9));
    assert_eq!(nice_ticks(3.0, 3.0, 5), [3.0]);
}

#[test]
fn svg_has_curves_axes_labels_and_title() {
    let records: Vec<MetricsRecord> = (0..=100)
        .map(|s| {
            let loss = 5.0 * (-(s as f64) / 40.0).exp() + 1.0;
            let val = (s % 20 == 0).then_some(loss + 0.1);
            rec(s, loss, val)
        })
        .collect();
    let svg = loss_svg(&records, "run <A&B>");
    assert!(svg.starts_with("<svg"));
    assert!(svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("run &lt;A&amp;B&gt;"));
    assert_eq!(svg.matches("<polyline").count(), 2);
    assert_eq!(svg.matches("<circle").count(), 6);
    assert!(svg.contains(">step</text>") && svg.contains(">loss</text>"));
    assert!(svg.contains(">train loss</text>") && svg.contains(">val loss</text>"));
    assert!(svg.contains(">100</text>"), "x tick labels");
    // Every number in the points lies inside the canvas.
    for pts in svg.split("points=\"").skip(1) {
        for pair in pts.split('"').next().unwrap().split_whitespace() {
            let (x, y) = pair.split_once(',').unwrap();
            let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
            assert!(
                (0.0..=800.0).contains(&x) && (0.0..=500.0).contains(&y),
                "{pair}"
            );
        }
    }

    // Degenerate inputs still give a valid document.
    let empty = loss_svg(&[], "t");
    assert!(empty.contains("no data yet"));
    let one = loss_svg(&[rec(5, 2.0, None)], "t");
    assert_eq!(one.matches("<polyline").count(), 1);
    let nan = loss_svg(&[rec(1, f64::NAN, None), rec(2, 3.0, None)], "t");
    assert!(!nan.contains("NaN"));

    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(PLOT_FILE);
    write_loss_svg(&p, &records, "run").unwrap();
    assert_eq!(fs::read_to_string(&p).unwrap(), loss_svg(&records, "run"));
}
