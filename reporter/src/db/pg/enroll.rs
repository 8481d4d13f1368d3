//! Enrollment: token use counting and id rules, safe across replicas.
