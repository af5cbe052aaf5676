-- listMessages filters on (recipient, messageBoxId) and orders by created_at, then messageId.

create index if not exists messages_recipient_messageboxid_created_at_index
  on messages (recipient, messageBoxId, created_at, messageId);
