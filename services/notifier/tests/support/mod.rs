pub mod suprsend_standin;
