//! The [`Store`] operations as SQL, each run through the pool by
//! [`PostgresStore::run`]. Kept apart from the pool, connection and error
//! handling, which every operation shares.

use futures_util::future::BoxFuture;
use futures_util::FutureExt as _;

use super::{
    agent_from_row, bump, col, entry_from_row, Kind, PostgresStore, AGENT_COLUMNS, ENTRY_COLUMNS,
};
use crate::store::{
    new_entry_id, parse_status, to_i64, to_json, AgentRecord, AgentStatus, Denial, EntryRecord,
    NewEntry, Store, StoreError,
};

impl Store for PostgresStore {
    fn revision(&self) -> BoxFuture<'_, Result<i64, StoreError>> {
        self.run(Kind::Read, |c| {
            Box::pin(async move {
                let row = c
                    .query_one("SELECT revision FROM meta WHERE id = 1", &[])
                    .await?;
                Ok(col(&row, 0)?)
            })
        })
        .boxed()
    }

    fn create_join_token<'a>(
        &'a self,
        hash: &'a str,
        name: &'a str,
        expires_at: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            let expires_at = to_i64("expires_at", expires_at)?;
            self.run(Kind::Write, move |c| {
                let (hash, name) = (hash.to_owned(), name.to_owned());
                Box::pin(async move {
                    let tx = c.transaction().await?;
                    bump(&tx).await?;
                    tx.execute(
                        "INSERT INTO join_tokens (hash, name, expires_at) VALUES ($1, $2, $3)",
                        &[&hash, &name, &expires_at],
                    )
                    .await?;
                    tx.commit().await?;
                    Ok(())
                })
            })
            .await
        }
        .boxed()
    }

    fn redeem_join_token<'a>(
        &'a self,
        hash: &'a str,
        now: u64,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        async move {
            let now = to_i64("now", now)?;
            self.run(Kind::Write, move |c| {
                let hash = hash.to_owned();
                Box::pin(async move {
                    let tx = c.transaction().await?;
                    bump(&tx).await?;
                    // Atomic on its own: of concurrent redeemers, one updates the row.
                    let row = tx
                        .query_opt(
                            "UPDATE join_tokens SET used_at = $1 \
                             WHERE hash = $2 AND used_at IS NULL AND expires_at > $1 \
                             RETURNING name",
                            &[&now, &hash],
                        )
                        .await?;
                    let Some(row) = row else {
                        tx.rollback().await?;
                        return Ok(None);
                    };
                    let name: String = col(&row, 0)?;
                    tx.commit().await?;
                    Ok(Some(name))
                })
            })
            .await
        }
        .boxed()
    }

    fn allow_device<'a>(
        &'a self,
        name: &'a str,
        public_key_hex: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            self.run(Kind::Write, move |c| {
                let (name, key) = (name.to_owned(), public_key_hex.to_owned());
                Box::pin(async move {
                    let tx = c.transaction().await?;
                    bump(&tx).await?;
                    tx.execute(
                        "INSERT INTO devices (name, public_key) VALUES ($1, $2)",
                        &[&name, &key],
                    )
                    .await?;
                    tx.commit().await?;
                    Ok(())
                })
            })
            .await
            .map_err(|e| match e {
                StoreError::Conflict(_) => {
                    StoreError::Conflict(format!("device {name:?} is already allowed"))
                }
                other => other,
            })
        }
        .boxed()
    }

    fn device_key<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        self.run(Kind::Read, move |c| {
            let name = name.to_owned();
            Box::pin(async move {
                let row = c
                    .query_opt("SELECT public_key FROM devices WHERE name = $1", &[&name])
                    .await?;
                Ok(row.map(|r| col(&r, 0)).transpose()?)
            })
        })
        .boxed()
    }

    fn create_entry<'a>(
        &'a self,
        e: &'a NewEntry,
    ) -> BoxFuture<'a, Result<EntryRecord, StoreError>> {
        async move {
            let mut rec = e.record(new_entry_id()?);
            let ttl = to_i64("ttl_secs", e.ttl_secs)?;
            let lists = [
                to_json(&e.selectors)?,
                to_json(&e.node_selectors)?,
                to_json(&e.audiences)?,
                to_json(&e.networks)?,
            ];
            let (id, subject, lists) = (&rec.id, &rec.subject, &lists);
            rec.revision = self
                .run(Kind::Write, move |c| {
                    let (id, subject, [sel, node, aud, net]) =
                        (id.clone(), subject.clone(), lists.clone());
                    Box::pin(async move {
                        let tx = c.transaction().await?;
                        let revision = bump(&tx).await?;
                        tx.execute(
                            "INSERT INTO entries (id, subject, selectors, node_selectors, \
                             ttl_secs, audiences, networks, revision, deleted) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0)",
                            &[&id, &subject, &sel, &node, &ttl, &aud, &net, &revision],
                        )
                        .await?;
                        tx.commit().await?;
                        Ok(revision)
                    })
                })
                .await?;
            Ok(rec)
        }
        .boxed()
    }

    fn delete_entry<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.run(Kind::Write, move |c| {
            let id = id.to_owned();
            Box::pin(async move {
                let tx = c.transaction().await?;
                let revision = bump(&tx).await?;
                let n = tx
                    .execute(
                        "UPDATE entries SET deleted = 1, revision = $1 \
                         WHERE id = $2 AND deleted = 0",
                        &[&revision, &id],
                    )
                    .await?;
                if n == 0 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                tx.commit().await?;
                Ok(true)
            })
        })
        .boxed()
    }

    fn entries_since(&self, revision: i64) -> BoxFuture<'_, Result<Vec<EntryRecord>, StoreError>> {
        self.run(Kind::Read, move |c| {
            Box::pin(async move {
                let rows = c
                    .query(
                        &format!(
                            "SELECT {ENTRY_COLUMNS} FROM entries WHERE revision > $1 \
                             ORDER BY revision"
                        ),
                        &[&revision],
                    )
                    .await?;
                Ok(rows
                    .iter()
                    .map(entry_from_row)
                    .collect::<Result<Vec<_>, _>>()?)
            })
        })
        .boxed()
    }

    fn entry<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<EntryRecord>, StoreError>> {
        self.run(Kind::Read, move |c| {
            let id = id.to_owned();
            Box::pin(async move {
                let row = c
                    .query_opt(
                        &format!(
                            "SELECT {ENTRY_COLUMNS} FROM entries WHERE id = $1 AND deleted = 0"
                        ),
                        &[&id],
                    )
                    .await?;
                Ok(row.as_ref().map(entry_from_row).transpose()?)
            })
        })
        .boxed()
    }

    fn upsert_agent<'a>(&'a self, a: &'a AgentRecord) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            let sel = to_json(&a.selectors)?;
            let attested_at = to_i64("attested_at", a.attested_at)?;
            let exp = to_i64("credential_exp", a.credential_exp)?;
            let sel = &sel;
            self.run(Kind::Write, move |c| {
                let (id, sel, jti) = (a.id.clone(), sel.clone(), a.credential_jti.clone());
                let status = a.status.as_str();
                Box::pin(async move {
                    let tx = c.transaction().await?;
                    bump(&tx).await?;
                    let current = tx
                        .query_opt("SELECT status FROM agents WHERE id = $1", &[&id])
                        .await?;
                    if let Some(row) = current {
                        if col::<&str>(&row, 0)? == AgentStatus::Revoked.as_str() {
                            return Err(StoreError::Conflict(format!(
                                "agent {id} is revoked; it must attest under a new id"
                            ))
                            .into());
                        }
                    }
                    tx.execute(
                        "INSERT INTO agents (id, selectors, status, attested_at, credential_jti, \
                         credential_exp) VALUES ($1, $2, $3, $4, $5, $6) \
                         ON CONFLICT (id) DO UPDATE SET selectors = excluded.selectors, \
                         status = CASE WHEN agents.status = 'suspended' THEN agents.status ELSE excluded.status END, \
                     attested_at = excluded.attested_at, \
                         credential_jti = excluded.credential_jti, \
                         credential_exp = excluded.credential_exp",
                        &[&id, &sel, &status, &attested_at, &jti, &exp],
                    )
                    .await?;
                    tx.commit().await?;
                    Ok(())
                })
            })
            .await
        }
        .boxed()
    }

    fn agent<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<AgentRecord>, StoreError>> {
        self.run(Kind::Read, move |c| {
            let id = id.to_owned();
            Box::pin(async move {
                let row = c
                    .query_opt(
                        &format!("SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1"),
                        &[&id],
                    )
                    .await?;
                Ok(row.as_ref().map(agent_from_row).transpose()?)
            })
        })
        .boxed()
    }

    fn agents(&self) -> BoxFuture<'_, Result<Vec<AgentRecord>, StoreError>> {
        self.run(Kind::Read, |c| {
            Box::pin(async move {
                let rows = c
                    .query(
                        &format!("SELECT {AGENT_COLUMNS} FROM agents ORDER BY id"),
                        &[],
                    )
                    .await?;
                Ok(rows
                    .iter()
                    .map(agent_from_row)
                    .collect::<Result<Vec<_>, _>>()?)
            })
        })
        .boxed()
    }

    fn set_agent_status<'a>(
        &'a self,
        id: &'a str,
        status: AgentStatus,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.run(Kind::Write, move |c| {
            let id = id.to_owned();
            Box::pin(async move {
                let tx = c.transaction().await?;
                bump(&tx).await?;
                let Some(row) = tx
                    .query_opt("SELECT status FROM agents WHERE id = $1", &[&id])
                    .await?
                else {
                    tx.rollback().await?;
                    return Ok(false);
                };
                match parse_status(col(&row, 0)?)? {
                    // Revoking twice changes nothing.
                    AgentStatus::Revoked if status == AgentStatus::Revoked => {
                        tx.rollback().await?;
                        Ok(true)
                    }
                    AgentStatus::Revoked => Err(StoreError::Conflict(format!(
                        "agent {id} is revoked; revocation is final"
                    ))
                    .into()),
                    _ => {
                        tx.execute(
                            "UPDATE agents SET status = $1 WHERE id = $2",
                            &[&status.as_str(), &id],
                        )
                        .await?;
                        tx.commit().await?;
                        Ok(true)
                    }
                }
            })
        })
        .boxed()
    }

    fn deny<'a>(&'a self, d: &'a Denial) -> BoxFuture<'a, Result<i64, StoreError>> {
        let (kind, value) = d.to_row();
        self.run(Kind::Write, move |c| {
            let value = value.to_owned();
            Box::pin(async move {
                let tx = c.transaction().await?;
                // After the bump we hold the writers' lock, so the check below
                // sees every committed denial.
                let revision = bump(&tx).await?;
                let n = tx
                    .execute(
                        "INSERT INTO denials (seq, kind, value) VALUES ($1, $2, $3) \
                         ON CONFLICT (kind, value) DO NOTHING",
                        &[&revision, &kind, &value],
                    )
                    .await?;
                if n == 0 {
                    // Already denied: the revision stays as it was.
                    tx.rollback().await?;
                    return Ok(revision - 1);
                }
                tx.commit().await?;
                Ok(revision)
            })
        })
        .boxed()
    }

    fn denials(&self) -> BoxFuture<'_, Result<Vec<Denial>, StoreError>> {
        self.run(Kind::Read, |c| {
            Box::pin(async move {
                let rows = c
                    .query("SELECT kind, value FROM denials ORDER BY seq", &[])
                    .await?;
                Ok(rows
                    .iter()
                    .map(|r| Denial::from_row(col(r, 0)?, col(r, 1)?))
                    .collect::<Result<Vec<_>, _>>()?)
            })
        })
        .boxed()
    }

    fn publish_jwt_key<'a>(
        &'a self,
        kid: &'a str,
        jwk_json: &'a str,
        expires_at: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            let expires_at = to_i64("expires_at", expires_at)?;
            self.run(Kind::Write, move |c| {
                let (kid, jwk) = (kid.to_owned(), jwk_json.to_owned());
                Box::pin(async move {
                    let tx = c.transaction().await?;
                    bump(&tx).await?;
                    tx.execute(
                        "INSERT INTO jwt_keys (kid, jwk, expires_at) VALUES ($1, $2, $3) \
                         ON CONFLICT (kid) DO UPDATE SET jwk = excluded.jwk, \
                         expires_at = excluded.expires_at",
                        &[&kid, &jwk, &expires_at],
                    )
                    .await?;
                    tx.commit().await?;
                    Ok(())
                })
            })
            .await
        }
        .boxed()
    }

    fn jwt_keys(&self, now: u64) -> BoxFuture<'_, Result<Vec<(String, String)>, StoreError>> {
        async move {
            let now = to_i64("now", now)?;
            self.run(Kind::Read, move |c| {
                Box::pin(async move {
                    let rows = c
                        .query(
                            "SELECT kid, jwk FROM jwt_keys WHERE expires_at > $1 ORDER BY kid",
                            &[&now],
                        )
                        .await?;
                    Ok(rows
                        .iter()
                        .map(|r| Ok((col(r, 0)?, col(r, 1)?)))
                        .collect::<Result<Vec<_>, StoreError>>()?)
                })
            })
            .await
        }
        .boxed()
    }
}
