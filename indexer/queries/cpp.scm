; inherits: c
; Tags for C++: these patterns, then C's. Conventions: see indexer/tags.py.

; ---- definitions
(field_declaration_list
  (function_definition
    declarator: (function_declarator
      declarator: [(field_identifier) (identifier) (destructor_name) (operator_name)] @name)
    body: (_) @body) @definition.method)
(field_declaration_list
  (template_declaration
    (function_definition
      declarator: (function_declarator
        declarator: [(field_identifier) (identifier) (destructor_name) (operator_name)] @name)
      body: (_) @body)) @definition.method)
(field_declaration_list
  (field_declaration
    declarator: (function_declarator
      declarator: [(field_identifier) (identifier) (destructor_name) (operator_name)] @name)) @definition.method)
(field_declaration_list
  (declaration
    declarator: (function_declarator
      declarator: [(field_identifier) (identifier) (destructor_name) (operator_name)] @name)) @definition.method)
; templates first: the `template <...>` line belongs to the signature
(template_declaration
  (class_specifier name: (type_identifier) @name body: (field_declaration_list) @body)) @definition.class
(template_declaration
  (struct_specifier name: (type_identifier) @name body: (field_declaration_list) @body)) @definition.struct
(template_declaration
  (function_definition
    declarator: (function_declarator
      declarator: (qualified_identifier
        scope: (_) @receiver
        name: [(identifier) (destructor_name) (operator_name)] @name))
    body: (_) @body)) @definition.method
(template_declaration
  (function_definition
    declarator: (function_declarator declarator: (identifier) @name)
    body: (_) @body)) @definition.function
(function_definition
  declarator: (function_declarator
    declarator: (qualified_identifier
      scope: (_) @receiver
      name: [(identifier) (destructor_name) (operator_name)] @name))
  body: (_) @body) @definition.method
(function_definition
  declarator: (reference_declarator
    (function_declarator
      declarator: (qualified_identifier
        scope: (_) @receiver
        name: [(identifier) (destructor_name) (operator_name)] @name)))
  body: (_) @body) @definition.method
(function_definition
  declarator: (pointer_declarator
    declarator: (function_declarator
      declarator: (qualified_identifier
        scope: (_) @receiver
        name: [(identifier) (destructor_name) (operator_name)] @name)))
  body: (_) @body) @definition.method
(function_definition
  declarator: (reference_declarator (function_declarator declarator: (identifier) @name))
  body: (compound_statement) @body) @definition.function
(class_specifier name: (type_identifier) @name body: (field_declaration_list) @body) @definition.class
(class_specifier name: (template_type name: (type_identifier) @name) body: (field_declaration_list) @body) @definition.class
(struct_specifier name: (template_type name: (type_identifier) @name) body: (field_declaration_list) @body) @definition.struct
(namespace_definition name: (namespace_identifier) @name body: (declaration_list) @body) @definition.module
(namespace_definition name: (nested_namespace_specifier) @name body: (declaration_list) @body) @definition.module
(alias_declaration name: (type_identifier) @name) @definition.type
(concept_definition name: (identifier) @name) @definition.type
(namespace_definition
  body: (declaration_list
    (declaration declarator: (init_declarator declarator: (identifier) @name)) @definition.variable))

; ---- references
(call_expression function: (qualified_identifier name: (identifier) @reference.call))
(call_expression function: (template_function name: (identifier) @reference.call))
(call_expression
  function: (qualified_identifier name: (template_function name: (identifier) @reference.call)))
(call_expression
  function: (field_expression field: (template_method name: (field_identifier) @reference.call)))
(new_expression type: (type_identifier) @reference.type)
(namespace_identifier) @reference.name

(parameter_declaration declarator: (reference_declarator (identifier) @ignore))
(optional_parameter_declaration declarator: (identifier) @ignore)
(using_declaration) @ignore
(type_parameter_declaration (type_identifier) @ignore)
(optional_type_parameter_declaration name: (type_identifier) @ignore)
