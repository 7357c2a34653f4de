//! The contract every [`KeyValueStore`] backend must keep, as tests any
//! backend's module can run against a fresh, empty store.

use super::{KeyValueStore, KvError};

type Outcome = Result<(), KvError>;

/// Runs every check on `store`, which must start empty.
pub(crate) async fn check_contract(store: &dyn KeyValueStore) -> Outcome {
    missing_keys_are_absent_not_errors(store).await?;
    values_are_stored_replaced_and_deleted(store).await?;
    counters_are_8_byte_little_endian(store).await?;
    non_counters_cannot_be_incremented(store).await?;
    compare_and_swap_is_conditional(store).await?;
    batches_act_on_every_key(store).await?;
    Ok(())
}

async fn missing_keys_are_absent_not_errors(store: &dyn KeyValueStore) -> Outcome {
    assert_eq!(store.get("missing").await?, None);
    assert!(!store.exists("missing").await?);
    store.delete("missing").await?;
    assert_eq!(store.get_keys().await?, Vec::<String>::new());
    Ok(())
}

async fn values_are_stored_replaced_and_deleted(store: &dyn KeyValueStore) -> Outcome {
    store.set("a", b"one").await?;
    store.set("b", b"").await?;
    assert_eq!(store.get("a").await?, Some(b"one".to_vec()));
    assert_eq!(store.get("b").await?, Some(Vec::new()));
    assert!(store.exists("b").await?);
    store.set("a", b"two").await?;
    assert_eq!(store.get("a").await?, Some(b"two".to_vec()));
    let mut keys = store.get_keys().await?;
    keys.sort();
    assert_eq!(keys, ["a", "b"]);
    store.delete("a").await?;
    store.delete("b").await?;
    assert_eq!(store.get("a").await?, None);
    assert!(!store.exists("b").await?);
    Ok(())
}

async fn counters_are_8_byte_little_endian(store: &dyn KeyValueStore) -> Outcome {
    assert_eq!(store.increment("n", 0).await?, 0);
    assert_eq!(store.get("n").await?, Some(0i64.to_le_bytes().to_vec()));
    assert_eq!(store.increment("n", 5).await?, 5);
    assert_eq!(store.increment("n", -7).await?, -2);
    assert_eq!(store.get("n").await?, Some((-2i64).to_le_bytes().to_vec()));
    store.set("m", &41i64.to_le_bytes()).await?;
    assert_eq!(store.increment("m", 1).await?, 42);
    store.set("max", &i64::MAX.to_le_bytes()).await?;
    assert_eq!(
        store.increment("max", 1).await,
        Err(KvError::Overflow { key: "max".into() })
    );
    assert_eq!(store.increment("max", 0).await?, i64::MAX);
    store
        .delete_many(&["n".into(), "m".into(), "max".into()])
        .await
}

async fn non_counters_cannot_be_incremented(store: &dyn KeyValueStore) -> Outcome {
    store.set("text", b"12").await?;
    assert_eq!(
        store.increment("text", 1).await,
        Err(KvError::NotACounter {
            key: "text".into(),
            len: 2
        })
    );
    assert_eq!(store.get("text").await?, Some(b"12".to_vec()));
    store.delete("text").await
}

async fn compare_and_swap_is_conditional(store: &dyn KeyValueStore) -> Outcome {
    assert!(store.compare_and_swap("k", None, b"first").await?);
    assert!(!store.compare_and_swap("k", None, b"second").await?);
    assert!(
        !store
            .compare_and_swap("k", Some(b"other"), b"second")
            .await?
    );
    assert_eq!(store.get("k").await?, Some(b"first".to_vec()));
    assert!(
        store
            .compare_and_swap("k", Some(b"first"), b"second")
            .await?
    );
    assert_eq!(store.get("k").await?, Some(b"second".to_vec()));
    store.delete("k").await
}

async fn batches_act_on_every_key(store: &dyn KeyValueStore) -> Outcome {
    store
        .set_many(&[("x".into(), b"1".to_vec()), ("y".into(), b"2".to_vec())])
        .await?;
    let got = store
        .get_many(&["y".into(), "none".into(), "x".into()])
        .await?;
    assert_eq!(
        got,
        [
            ("y".to_owned(), Some(b"2".to_vec())),
            ("none".to_owned(), None),
            ("x".to_owned(), Some(b"1".to_vec())),
        ]
    );
    store.delete_many(&["x".into(), "y".into()]).await?;
    assert_eq!(store.get_keys().await?, Vec::<String>::new());
    Ok(())
}
