use tabagent_librarian::{ExtractError, Format};

use crate::{corpus, extractor};

fn read(name: &str) -> Result<tabagent_librarian::Extracted, ExtractError> {
    let bytes = std::fs::read(corpus(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let format = Format::detect(name, &bytes).unwrap_or_else(|| panic!("{name}: no format"));
    extractor().extract(format, &bytes)
}

#[test]
fn a_printed_pdf_gives_its_pages_in_order_with_its_title() {
    let pdf = read("orchard-handbook.pdf").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pdf.format, Format::Pdf);
    assert_eq!(pdf.title.as_deref(), Some("Orchard Handbook"));
    let numbers: Vec<Option<u32>> = pdf.pages.iter().map(|p| p.number).collect();
    assert_eq!(numbers, vec![Some(1), Some(2), Some(3)]);
    assert!(
        pdf.pages[0].text.contains("Pruning apple trees"),
        "{}",
        pdf.pages[0].text
    );
    assert!(
        pdf.pages[1].text.contains("twenty litres"),
        "{}",
        pdf.pages[1].text
    );
    assert!(
        pdf.pages[2].text.contains("Quinces ripen in late October"),
        "{}",
        pdf.pages[2].text
    );
    assert!(!pdf.pages[0].text.contains("quince"));
    assert!(pdf.warnings.is_empty(), "{:?}", pdf.warnings);
}

#[test]
fn a_scan_an_encrypted_and_a_truncated_pdf_each_say_what_is_wrong() {
    assert!(matches!(
        read("scanned-letter.pdf"),
        Err(ExtractError::NoText { pages: 1 })
    ));
    assert!(matches!(
        read("encrypted.pdf"),
        Err(ExtractError::Encrypted)
    ));
    match read("truncated.pdf") {
        Err(ExtractError::Malformed(message)) => assert!(message.contains("PDF"), "{message}"),
        other => panic!("a truncated PDF gave {other:?}"),
    }
}

#[test]
fn office_documents_give_their_paragraphs() {
    let docx = read("beekeeping.docx").unwrap_or_else(|e| panic!("{e}"));
    let text = &docx.pages[0].text;
    assert!(
        text.starts_with("Beekeeping notes\n\nInspect the hives every nine days"),
        "{text}"
    );
    assert!(
        text.contains("Smoke calms the bees:\tuse cool white smoke & keep it brief."),
        "{text}"
    );
    assert!(text.ends_with("at least 80% capped."), "{text}");
    let odt = read("composting.odt").unwrap_or_else(|e| panic!("{e}"));
    let text = &odt.pages[0].text;
    assert!(
        text.starts_with("Composting\n\nTurn the compost heap every two weeks   so that air"),
        "{text}"
    );
    assert!(
        text.contains("wrung-out sponge & smells of earth."),
        "{text}"
    );
}

#[test]
fn a_web_page_gives_its_article_not_its_menus() {
    let html = r#"<!doctype html><html><head><title>Bread at home</title></head><body>
        <nav><ul><li><a href="/">Home</a></li><li><a href="/shop">Shop our ovens</a></li></ul></nav>
        <article><h1>Baking sourdough</h1>
        <p>Feed the starter twelve hours before baking, with equal weights of flour and water, so that
        it is at its most active when the dough is mixed. A lively starter doubles in four hours.</p>
        <p>Bake at 250 degrees in a covered pot for twenty minutes, then uncovered until the crust is
        deep brown: the steam trapped under the lid lets the loaf rise before the crust sets.</p>
        <p>Let the loaf cool for an hour before cutting it; the crumb is still setting as it cools and
        cutting early leaves it gummy.</p></article>
        <footer>Copyright Bread Co. Subscribe to our newsletter.</footer></body></html>"#;
    let page = extractor()
        .extract(Format::Html, html.as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    let text = &page.pages[0].text;
    assert!(text.contains("Feed the starter twelve hours"), "{text}");
    assert!(text.contains("cutting early leaves it gummy"), "{text}");
    assert!(!text.contains("Shop our ovens"), "{text}");
    assert!(!text.contains("newsletter"), "{text}");
    assert!(page.markdown);
}

#[test]
fn a_binary_file_is_not_a_document() {
    assert_eq!(Format::detect("holiday.jpg", b"\xFF\xD8\xFF\xE0"), None);
}
