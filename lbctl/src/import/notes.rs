//! The notes being gathered: every setting not mapped, or changed in meaning.

use super::Note;

#[derive(Debug, Default)]
pub(super) struct Notes(pub(super) Vec<Note>);

impl Notes {
    pub(super) fn add(
        &mut self,
        file: &str,
        line: usize,
        setting: &str,
        reason: impl Into<String>,
    ) {
        let mut setting: String = setting.chars().take(120).collect();
        if setting.is_empty() {
            setting = "(empty)".into();
        }
        self.0.push(Note {
            file: file.to_owned(),
            line,
            setting,
            reason: reason.into(),
        });
    }
}
