//! What each rule watches (its `interest`), kept beside its state: after a restart a
//! rule's restored state still names addresses its containers will not declare again,
//! so what it watched comes back too, or the connect filter would hide their connects.

use super::*;
use crate::state::DestinationKey;

/// One row per rule id: its watched destinations, 16 bytes each.
const INTEREST: TableDefinition<&str, &[u8]> = TableDefinition::new("interest");

impl StateStore {
    /// The destinations rule `rule_id` watched when last written (none if never).
    pub(crate) fn load_interest(&mut self, rule_id: &str) -> Result<Vec<DestinationKey>> {
        self.read_interest(rule_id)
            .map_err(|e| self.error("read", &e))
    }

    /// Writes what rule `rule_id` watches now; false (warned as a state write is, at
    /// most once a minute) when it could not, so the caller retries later.
    pub(crate) fn save_interest(&mut self, rule_id: &str, keys: &[DestinationKey]) -> bool {
        let Err(error) = self.write_interest(rule_id, keys) else {
            return true;
        };
        self.write_failed(&error);
        false
    }

    fn read_interest(&mut self, rule_id: &str) -> Result<Vec<DestinationKey>, redb::Error> {
        let txn = self.db()?.begin_read()?;
        let table = match txn.open_table(INTEREST) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(error) => return Err(error.into()),
        };
        let Some(row) = table.get(rule_id)? else {
            return Ok(Vec::new());
        };
        Ok(row.value().as_chunks::<16>().0.to_vec())
    }

    fn write_interest(
        &mut self,
        rule_id: &str,
        keys: &[DestinationKey],
    ) -> Result<(), redb::Error> {
        let txn = self.db()?.begin_write()?;
        txn.open_table(INTEREST)?
            .insert(rule_id, keys.concat().as_slice())?;
        txn.commit()?;
        Ok(())
    }

    fn error(&self, what: &str, error: &redb::Error) -> anyhow::Error {
        anyhow!(
            "cannot {what} the state store {}: {}",
            self.path.display(),
            error_line(error)
        )
    }
}
