//! Placeholder until the backend lands; every call fails with `Unavailable`.
#![allow(clippy::all)]
use super::*;
pub struct SqliteStore;
impl SqliteStore {
    pub fn open(_path: &str, _o: &StoreOptions) -> Result<Self, StoreError> {
        Err(StoreError::Config("backend not built yet".into()))
    }
}
impl super::Backend for SqliteStore {
    fn kind(&self) -> &'static str {
        "unbuilt"
    }
    fn migrate(&self) -> StoreFuture<'_, MigrationReport> {
        Box::pin(async { Err(StoreError::Unavailable("not built yet".into())) })
    }
    fn delivery_fee(&self, _message_box: &str) -> StoreFuture<'_, Option<i64>> {
        Box::pin(async { Err(StoreError::Unavailable("not built yet".into())) })
    }
    fn recipient_fees(
        &self,
        _sender: &str,
        _message_box: &str,
        _recipients: &[String],
        _default_fee: i64,
    ) -> StoreFuture<'_, Vec<i64>> {
        Box::pin(async { Err(StoreError::Unavailable("not built yet".into())) })
    }
    fn insert_messages(&self, _messages: Vec<NewMessage>) -> StoreFuture<'_, Vec<InsertOutcome>> {
        Box::pin(async { Err(StoreError::Unavailable("not built yet".into())) })
    }
    fn list_messages(
        &self,
        _recipient: &str,
        _box_type: &str,
        _limit: u32,
        _offset: u64,
    ) -> StoreFuture<'_, Vec<StoredMessage>> {
        Box::pin(async { Err(StoreError::Unavailable("not built yet".into())) })
    }
    fn acknowledge(&self, _recipient: &str, _message_ids: &[String]) -> StoreFuture<'_, u64> {
        Box::pin(async { Err(StoreError::Unavailable("not built yet".into())) })
    }
    fn register_device(&self, _reg: DeviceRegistration) -> StoreFuture<'_, u64> {
        Box::pin(async { Err(StoreError::Unavailable("not built yet".into())) })
    }
    fn list_devices(&self, _identity_key: &str) -> StoreFuture<'_, Vec<Device>> {
        Box::pin(async { Err(StoreError::Unavailable("not built yet".into())) })
    }
    fn active_devices(&self, _identity_key: &str) -> StoreFuture<'_, Vec<Device>> {
        Box::pin(async { Err(StoreError::Unavailable("not built yet".into())) })
    }
    fn record_push(&self, _fcm_token: &str, _success: bool, _deactivate: bool) -> StoreFuture<'_, ()> {
        Box::pin(async { Err(StoreError::Unavailable("not built yet".into())) })
    }
    fn set_permission(
        &self,
        _recipient: &str,
        _sender: Option<&str>,
        _message_box: &str,
        _fee: i64,
    ) -> StoreFuture<'_, ()> {
        Box::pin(async { Err(StoreError::Unavailable("not built yet".into())) })
    }
    fn get_permission(
        &self,
        _recipient: &str,
        _sender: Option<&str>,
        _message_box: &str,
    ) -> StoreFuture<'_, Option<Permission>> {
        Box::pin(async { Err(StoreError::Unavailable("not built yet".into())) })
    }
    fn list_permissions(
        &self,
        _recipient: &str,
        _message_box: Option<&str>,
        _limit: u32,
        _offset: u64,
        _created_asc: bool,
    ) -> StoreFuture<'_, (Vec<Permission>, u64)> {
        Box::pin(async { Err(StoreError::Unavailable("not built yet".into())) })
    }
    fn flush(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Err(StoreError::Unavailable("not built yet".into())) })
    }
}
