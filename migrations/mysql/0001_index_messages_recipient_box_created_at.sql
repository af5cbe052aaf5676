-- listMessages filters on (recipient, messageBoxId) and orders by created_at, then
-- messageId; the original has no index on recipient at all. InnoDB appends the clustering
-- key (the unique messageId) to every secondary index, so this index also serves the
-- messageId tie-break and a LIMIT stops after one page.

-- guard: no-index messages messages_recipient_messageboxid_created_at_index
alter table `messages` add index `messages_recipient_messageboxid_created_at_index`(`recipient`, `messageBoxId`, `created_at`);
