-- 012: other spellings of a rate card model's id (aliases = [...] in the card, or POST /v1/rates):
-- a record whose model is an alias is priced as the model. An alias belongs to one model.
CREATE TABLE rate_aliases (
    alias      VARCHAR PRIMARY KEY,
    model      VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    source     VARCHAR NOT NULL
);
