; inherits: typescript
; Tags for TSX: TypeScript's, plus components used in JSX.

(jsx_opening_element name: (identifier) @reference.type (#match? @reference.type "^[A-Z]"))
(jsx_self_closing_element name: (identifier) @reference.type (#match? @reference.type "^[A-Z]"))
(jsx_opening_element name: (member_expression property: (property_identifier) @reference.type))
(jsx_self_closing_element name: (member_expression property: (property_identifier) @reference.type))

(jsx_opening_element name: (identifier) @ignore (#match? @ignore "^[a-z]"))
(jsx_self_closing_element name: (identifier) @ignore (#match? @ignore "^[a-z]"))
(jsx_closing_element) @ignore
