//! Ranked retrieval over an agent's FAQ and texts (Okapi BM25 on Unicode word tokens).

use std::collections::HashMap;

use unicode_segmentation::UnicodeSegmentation;

use crate::agent::KnowledgeDef;

const K1: f64 = 1.2;
const B: f64 = 0.75;

/// Words too common to tell passages apart.
const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "can", "do", "does", "for", "from", "how",
    "i", "in", "is", "it", "me", "my", "of", "on", "or", "the", "to", "what", "which", "with",
    "you", "your", "we", "this", "that", "there", "much", "many", "please", "tell", "about",
];

/// Lower-cased word tokens without stopwords; numbers and non-Latin scripts are kept.
/// A plain English plural `s` is dropped so "cards" meets "card".
pub fn tokenize(text: &str) -> Vec<String> {
    text.unicode_words()
        .map(|w| {
            let mut w = w.to_lowercase();
            if w.len() > 3 && w.ends_with('s') && !w.ends_with("ss") && w.is_ascii() {
                w.pop();
            }
            w
        })
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassageKind {
    Faq,
    Text,
}

#[derive(Debug, Clone)]
pub struct Passage {
    pub kind: PassageKind,
    /// The FAQ question, for FAQ passages.
    pub question: Option<String>,
    /// What is said to the customer: the FAQ answer or the text chunk.
    pub answer: String,
}

#[derive(Debug, Clone)]
pub struct Hit<'a> {
    pub passage: &'a Passage,
    pub score: f64,
}

/// The searchable form of an agent's knowledge, built once per agent version: for each
/// term, the passages holding it with the term's whole BM25 weight there, so a search
/// costs one lookup per query word however many passages there are.
#[derive(Debug, Clone, Default)]
pub struct KnowledgeIndex {
    passages: Vec<Passage>,
    postings: HashMap<String, Vec<(usize, f64)>>,
}

impl KnowledgeIndex {
    pub fn build(def: &KnowledgeDef) -> KnowledgeIndex {
        let mut passages = Vec::new();
        // Each passage's term frequencies and length in tokens.
        let mut counted: Vec<(HashMap<String, u32>, usize)> = Vec::new();
        let mut add = |passage: Passage, indexed: &str| {
            let tokens = tokenize(indexed);
            let mut tf: HashMap<String, u32> = HashMap::new();
            for t in &tokens {
                *tf.entry(t.clone()).or_insert(0) += 1;
            }
            counted.push((tf, tokens.len()));
            passages.push(passage);
        };
        for q in &def.faq {
            let passage = Passage {
                kind: PassageKind::Faq,
                question: Some(q.question.clone()),
                answer: q.answer.clone(),
            };
            // The question counts twice: customers phrase things like the question.
            add(
                passage,
                &format!("{} {} {}", q.question, q.question, q.answer),
            );
        }
        for text in &def.texts {
            for chunk in chunks(text) {
                let passage = Passage {
                    kind: PassageKind::Text,
                    question: None,
                    answer: chunk.clone(),
                };
                add(passage, &chunk);
            }
        }
        let mut df: HashMap<&str, u32> = HashMap::new();
        for (tf, _) in &counted {
            for term in tf.keys() {
                *df.entry(term).or_default() += 1;
            }
        }
        let n = counted.len() as f64;
        let avg_len = if counted.is_empty() {
            0.0
        } else {
            counted.iter().map(|(_, len)| *len as f64).sum::<f64>() / n
        };
        let mut postings: HashMap<String, Vec<(usize, f64)>> = HashMap::new();
        for (i, (tf, len)) in counted.iter().enumerate() {
            for (term, &count) in tf {
                let df = f64::from(df[term.as_str()]);
                let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
                let tf = f64::from(count);
                let weight = idf * tf * (K1 + 1.0)
                    / (tf + K1 * (1.0 - B + B * *len as f64 / avg_len.max(1.0)));
                postings.entry(term.clone()).or_default().push((i, weight));
            }
        }
        KnowledgeIndex { passages, postings }
    }

    pub fn len(&self) -> usize {
        self.passages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.passages.is_empty()
    }

    /// The best `k` passages for `query`, highest score first; ties keep definition order.
    pub fn search(&self, query: &str, k: usize) -> Vec<Hit<'_>> {
        let mut scores = vec![0.0; self.passages.len()];
        for term in tokenize(query) {
            for &(i, weight) in self.postings.get(&term).into_iter().flatten() {
                scores[i] += weight;
            }
        }
        let mut hits: Vec<Hit<'_>> = scores
            .iter()
            .zip(&self.passages)
            .filter(|(&score, _)| score > 0.0)
            .map(|(&score, passage)| Hit { passage, score })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits.truncate(k);
        hits
    }
}

/// Splits a text into passages at blank lines; long paragraphs are cut at sentence ends.
fn chunks(text: &str) -> Vec<String> {
    const MAX: usize = 600;
    let mut out = Vec::new();
    for para in text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
        if para.len() <= MAX {
            out.push(para.to_string());
            continue;
        }
        let mut cur = String::new();
        for sentence in para.split_sentence_bounds() {
            if !cur.is_empty() && cur.len() + sentence.len() > MAX {
                out.push(cur.trim().to_string());
                cur.clear();
            }
            cur.push_str(sentence);
        }
        if !cur.trim().is_empty() {
            out.push(cur.trim().to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::FaqEntry;

    fn index() -> KnowledgeIndex {
        KnowledgeIndex::build(&KnowledgeDef {
            faq: vec![FaqEntry {
                question: "Can I use Apple Pay?".into(),
                answer: "Yes, both cards support Apple Pay and Google Pay.".into(),
            }],
            texts: vec![
                "Basic Debit\nNo monthly fee. Issuance costs €5.\n\nPremium Debit\nMonthly fee: €12.90. ATM withdrawals are free worldwide.".into(),
                "Größere Limits gelten für Premium-Kunden.".into(),
            ],
        })
    }

    #[test]
    fn ranks_the_matching_passage_first() {
        let idx = index();
        assert_eq!(idx.len(), 4);
        let hits = idx.search("What is the monthly fee of the premium card?", 3);
        assert!(
            hits[0].passage.answer.starts_with("Premium Debit"),
            "{hits:?}"
        );
        let hits = idx.search("apple pay?", 1);
        assert_eq!(hits[0].passage.kind, PassageKind::Faq);
        assert!(idx.search("the of and", 3).is_empty());
        assert!(idx.search("zebra", 3).is_empty());
    }

    /// Okapi BM25 worked by hand for a two-passage corpus.
    #[test]
    fn scores_are_bm25() {
        let idx = KnowledgeIndex::build(&KnowledgeDef {
            faq: Vec::new(),
            texts: vec!["apple banana".into(), "banana cherry cherry".into()],
        });
        // Lengths 2 and 3 (average 2.5); "cherry" is in one passage of two, twice.
        let cherry = 2f64.ln() * 2.0 * 2.2 / (2.0 + 1.2 * (0.25 + 0.75 * 3.0 / 2.5));
        let hits = idx.search("cherry", 5);
        assert_eq!(hits.len(), 1);
        assert!((hits[0].score - cherry).abs() < 1e-12, "{hits:?}");
        // "banana" is in both, once: the shorter passage ranks first.
        let banana = |len: f64| 1.2f64.ln() * 2.2 / (1.0 + 1.2 * (0.25 + 0.75 * len / 2.5));
        let hits = idx.search("banana cherry", 5);
        assert_eq!(hits.len(), 2);
        assert!((hits[0].score - (banana(3.0) + cherry)).abs() < 1e-12);
        assert!((hits[1].score - banana(2.0)).abs() < 1e-12);
        assert!(hits[1].passage.answer.starts_with("apple"));
    }

    #[test]
    fn tokenizes_unicode() {
        assert_eq!(
            tokenize("Größere Limits, 12.90€ cards!"),
            vec!["größere", "limit", "12.90", "card"]
        );
        let idx = index();
        let hits = idx.search("größere limits", 1);
        assert!(hits[0].passage.answer.starts_with("Größere"));
    }
}
