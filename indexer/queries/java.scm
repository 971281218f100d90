; Tags for Java. Conventions: see indexer/tags.py.

; ---- definitions
(class_declaration name: (identifier) @name body: (class_body) @body) @definition.class
(record_declaration name: (identifier) @name body: (class_body) @body) @definition.class
(interface_declaration name: (identifier) @name body: (interface_body) @body) @definition.interface
(annotation_type_declaration name: (identifier) @name body: (annotation_type_body) @body) @definition.interface
(enum_declaration name: (identifier) @name body: (enum_body) @body) @definition.enum
(method_declaration name: (identifier) @name body: (block) @body) @definition.method
(method_declaration name: (identifier) @name) @definition.method
(constructor_declaration name: (identifier) @name body: (constructor_body) @body) @definition.method
(compact_constructor_declaration name: (identifier) @name body: (block) @body) @definition.method
(field_declaration declarator: (variable_declarator name: (identifier) @name)) @definition.field
(constant_declaration declarator: (variable_declarator name: (identifier) @name)) @definition.constant
(enum_constant name: (identifier) @name) @definition.constant

; ---- references
(method_invocation name: (identifier) @reference.call)
(object_creation_expression type: (type_identifier) @reference.type)
(object_creation_expression type: (generic_type (type_identifier) @reference.type))
(type_identifier) @reference.type
(field_access field: (identifier) @reference.name)
(identifier) @reference.name

(formal_parameter name: (identifier) @ignore)
(spread_parameter (variable_declarator name: (identifier) @ignore))
(catch_formal_parameter name: (identifier) @ignore)
(lambda_expression parameters: (identifier) @ignore)
(inferred_parameters (identifier) @ignore)
(import_declaration) @ignore
(type_parameter (type_identifier) @ignore)
(package_declaration) @ignore

; ---- imports
(import_declaration (scoped_identifier) @import.module) @import
(import_declaration (identifier) @import.module) @import
(import_declaration (scoped_identifier) @import.module (asterisk) @import.name) @import
