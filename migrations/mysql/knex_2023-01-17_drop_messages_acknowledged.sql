-- The original's step `2023-01-17-messages-update`: messages lose their `acknowledged` flag
-- (acknowledging deletes the row).

-- guard: column messages acknowledged
alter table `messages` drop `acknowledged`;
