-- 009: a budget may enforce its amount on reservations (admission before the call), not only alert.
ALTER TABLE budgets ADD COLUMN enforce BOOLEAN DEFAULT false;
UPDATE budgets SET enforce = false;
